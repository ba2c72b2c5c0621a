"""Slack: the one resource that posts alerts, through an incoming-webhook URL (off when empty)."""

from __future__ import annotations

from typing import Any

import dagster as dg
import httpx


class SlackResource(dg.ConfigurableResource):
    webhook_url: str = ""
    timeout_s: float = 10.0

    @property
    def enabled(self) -> bool:
        return bool(self.webhook_url)

    def post(self, payload: dict[str, Any]) -> bool:
        """Post a message; False when alerts are off. Raises on an HTTP error so the sensor tick shows it."""
        if not self.enabled:
            return False
        response = httpx.post(self.webhook_url, json=payload, timeout=self.timeout_s)
        response.raise_for_status()
        return True
