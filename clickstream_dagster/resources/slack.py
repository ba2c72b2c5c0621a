"""Slack: the one resource that posts alerts, through an incoming-webhook URL (off when empty)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import httpx

_MAX_RESPONSE_CHARS = 200


class SlackPostError(RuntimeError):
    """Slack did not accept a message; the text never contains the webhook URL (it is a secret)."""


class SlackResource(dg.ConfigurableResource):
    webhook_url: str = ""
    dagster_url: str = "http://127.0.0.1:3000"
    timeout_s: float = 10.0

    @property
    def enabled(self) -> bool:
        return bool(self.webhook_url)

    def run_url(self, run_id: str) -> str:
        """Link to a run in the Dagster UI."""
        return f"{self.dagster_url.rstrip('/')}/runs/{run_id}"

    def post(self, payload: dict[str, Any]) -> bool:
        """Post a message; False when alerts are off. Raises SlackPostError so the sensor tick shows it."""
        if not self.enabled:
            return False
        # `from None`: httpx errors quote the full URL, whose path is the webhook's secret token.
        try:
            response = httpx.post(self.webhook_url, json=payload, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise SlackPostError(
                f"Slack webhook at {_redact(self.webhook_url)} not reachable ({type(exc).__name__}: {exc}): "
                "check SLACK_WEBHOOK_URL and the network"
            ) from None
        if response.is_error:
            body = response.text.strip()[:_MAX_RESPONSE_CHARS]
            raise SlackPostError(
                f"Slack webhook at {_redact(self.webhook_url)} rejected the message with HTTP "
                f"{response.status_code}: {body!r}: check SLACK_WEBHOOK_URL (revoked or mistyped?)"
            )
        return True


def _redact(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" if parts.hostname else "<unparseable URL>"
