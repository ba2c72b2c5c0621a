"""Run-failure alerts: every failed run in this code location becomes one Slack message."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dagster as dg

from clickstream_dagster.resources.slack import SlackResource

if TYPE_CHECKING:
    from dagster_shared.error import SerializableErrorInfo

SLACK_ON_RUN_FAILURE = "slack_on_run_failure"

MAX_ERROR_CHARS = 500
MAX_STEPS_SHOWN = 10
MAX_ASSETS_SHOWN = 10


@dataclass(frozen=True)
class StepFailure:
    step_key: str
    asset_keys: tuple[str, ...] = ()
    error: str = ""


def build_failure_payload(
    *,
    run_id: str,
    job_name: str,
    run_url: str,
    step_failures: Sequence[StepFailure],
    run_error: str = "",
    partition_key: str | None = None,
) -> dict[str, Any]:
    """Slack Block Kit message (plus fallback `text` for notifications) for one failed run."""
    fields = [
        {"type": "mrkdwn", "text": f"*Job*\n`{_escape(job_name)}`"},
        {"type": "mrkdwn", "text": f"*Run*\n<{run_url}|{run_id}>"},
    ]
    if partition_key:
        fields.append({"type": "mrkdwn", "text": f"*Partition*\n`{_escape(partition_key)}`"})
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _trim(f":rotating_light: Run failed: {job_name}", 150)},
        },
        {"type": "section", "fields": fields},
    ]
    for failure in step_failures[:MAX_STEPS_SHOWN]:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _step_mrkdwn(failure)}})
    hidden = len(step_failures) - MAX_STEPS_SHOWN
    if hidden > 0:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"…and {hidden} more failed steps"}]}
        )
    if run_error:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"```{_escape(_trim(run_error))}```"}}
        )
    blocks.append(
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Open run in Dagster"},
                    "url": run_url,
                }
            ],
        }
    )
    return {"text": _fallback_text(run_id, job_name, run_url, step_failures, run_error), "blocks": blocks}


@dg.run_failure_sensor(
    name=SLACK_ON_RUN_FAILURE,
    description="Posts every failed run in this code location to Slack (off while SLACK_WEBHOOK_URL is empty).",
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def slack_on_run_failure(context: dg.RunFailureSensorContext, slack: SlackResource) -> dg.SkipReason | None:
    run = context.dagster_run
    if not slack.enabled:
        return dg.SkipReason(f"Slack alerts are off (SLACK_WEBHOOK_URL is empty); run {run.run_id} failed")
    failures = step_failures(context)
    run_error = "" if failures else _run_error(context.failure_event)
    payload = build_failure_payload(
        run_id=run.run_id,
        job_name=run.job_name,
        run_url=slack.run_url(run.run_id),
        step_failures=failures,
        run_error=run_error,
        partition_key=context.partition_key,
    )
    # A failed post raises: the tick turns red with the reason, and Dagster still advances the cursor.
    slack.post(payload)
    context.log.info(f"Posted failure of run {run.run_id} ({run.job_name}) to Slack")
    return None


def step_failures(context: dg.RunFailureSensorContext) -> list[StepFailure]:
    """Failed steps of the run, each with the asset keys it was to materialize and its error."""
    planned = context.instance.get_records_for_run(
        run_id=context.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
    ).records
    assets_by_step: defaultdict[str, list[str]] = defaultdict(list)
    for record in planned:
        event = record.event_log_entry.dagster_event
        if event is not None and event.step_key and event.asset_key:
            assets_by_step[event.step_key].append(event.asset_key.to_user_string())
    failures = []
    for event in context.get_step_failure_events():
        step_key = event.step_key or "?"
        failures.append(
            StepFailure(
                step_key=step_key,
                asset_keys=tuple(sorted(set(assets_by_step[step_key]))),
                error=error_summary(event.step_failure_data.error),
            )
        )
    return failures


def error_summary(error: SerializableErrorInfo | None) -> str:
    """The user's exception as `Type: message`, unwrapped from Dagster's step-execution wrappers."""
    if error is None:
        return ""
    while error.cause is not None and (error.cls_name or "").startswith("Dagster"):
        error = error.cause
    return error.message.strip()


def _run_error(failure_event: dg.DagsterEvent) -> str:
    # No failure data when the run was marked failed from outside, e.g. by run monitoring.
    error = failure_event.job_failure_data.error if failure_event.event_specific_data is not None else None
    return error_summary(error) if error is not None else (failure_event.message or "")


def _step_mrkdwn(failure: StepFailure) -> str:
    text = f"*Step* `{_escape(failure.step_key)}`"
    if failure.asset_keys:
        shown = ", ".join(f"`{_escape(key)}`" for key in failure.asset_keys[:MAX_ASSETS_SHOWN])
        more = len(failure.asset_keys) - MAX_ASSETS_SHOWN
        text += f"  ·  *Assets* {shown}" + (f" and {more} more" if more > 0 else "")
    if failure.error:
        text += f"\n```{_escape(_trim(failure.error))}```"
    return text


def _fallback_text(
    run_id: str, job_name: str, run_url: str, step_failures: Sequence[StepFailure], run_error: str
) -> str:
    lines = [f"Dagster run {run_id} of {_escape(job_name)} failed: {run_url}"]
    for failure in step_failures[:MAX_STEPS_SHOWN]:
        assets = f" (assets: {', '.join(failure.asset_keys)})" if failure.asset_keys else ""
        error = f": {_trim(failure.error, 200)}" if failure.error else ""
        lines.append(_escape(f"• step {failure.step_key}{assets}{error}"))
    if run_error:
        lines.append(_escape(_trim(run_error, 200)))
    return "\n".join(lines)


def _trim(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _escape(text: str) -> str:
    """Slack mrkdwn treats &, < and > as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
