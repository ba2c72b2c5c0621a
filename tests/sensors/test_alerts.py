"""The run-failure sensor against a real failed run on a real Dagster instance; only Slack is faked,
as a local HTTP server that records every webhook request."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import dagster as dg
import pytest

from clickstream_dagster.resources.slack import SlackPostError, SlackResource
from clickstream_dagster.sensors.alerts import (
    MAX_ERROR_CHARS,
    MAX_STEPS_SHOWN,
    SLACK_ON_RUN_FAILURE,
    StepFailure,
    build_failure_payload,
    slack_on_run_failure,
)
from clickstream_dagster.stack.process import free_port

WEBHOOK_PATH = "/services/T000/B000/secret-token"
DAGSTER_URL = "http://dagster.test:3000/"
FAILED_ASSET = "alerts_test/broken_events"
FAILED_STEP = "alerts_test__broken_events"


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@dataclass
class FakeSlack:
    url: str
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    status: int = 200


@pytest.fixture
def slack_server() -> Iterator[FakeSlack]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    fake = FakeSlack(url=f"http://127.0.0.1:{server.server_address[1]}{WEBHOOK_PATH}")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            fake.requests.append((self.path, json.loads(body)))
            reply = b"ok" if fake.status == 200 else b"internal_error"
            self.send_response(fake.status)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@dg.asset(key_prefix="alerts_test")
def healthy_events() -> int:
    return 1


@dg.asset(key_prefix="alerts_test", deps=[healthy_events])
def broken_events() -> None:
    raise ValueError("boom")


@pytest.fixture(scope="module")
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


def _fail_run(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    result = dg.materialize([healthy_events, broken_events], raise_on_error=False, instance=instance)
    assert not result.success
    return result


@pytest.fixture(scope="module")
def failed_run(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return _fail_run(instance)


def _evaluate(instance: dg.DagsterInstance, run: dg.ExecuteInProcessResult, slack: SlackResource) -> Any:
    context = dg.build_run_status_sensor_context(
        sensor_name=SLACK_ON_RUN_FAILURE,
        dagster_instance=instance,
        dagster_run=run.dagster_run,
        dagster_event=run.get_run_failure_event(),
        resources={"slack": slack},
    ).for_run_failure()
    return slack_on_run_failure(context)


def _slack(fake: FakeSlack) -> SlackResource:
    return SlackResource(webhook_url=fake.url, dagster_url=DAGSTER_URL, timeout_s=5)


def test_failed_run_is_posted_with_run_step_asset_error_and_link(
    instance: dg.DagsterInstance, failed_run: dg.ExecuteInProcessResult, slack_server: FakeSlack
) -> None:
    assert _evaluate(instance, failed_run, _slack(slack_server)) is None

    assert len(slack_server.requests) == 1
    path, payload = slack_server.requests[0]
    assert path == WEBHOOK_PATH
    run_id = failed_run.run_id
    run_link = f"http://dagster.test:3000/runs/{run_id}"
    blocks = _dump(payload["blocks"])
    for text in (payload["text"], blocks):
        assert run_id in text
        assert run_link in text
        assert FAILED_STEP in text
        assert FAILED_ASSET in text
        assert "ValueError: boom" in text
        assert "healthy_events" not in text
    assert failed_run.dagster_run.job_name in blocks
    buttons = [el for block in payload["blocks"] if block["type"] == "actions" for el in block["elements"]]
    assert [button["url"] for button in buttons] == [run_link]


def test_webhook_unset_skips_without_a_request(
    instance: dg.DagsterInstance, failed_run: dg.ExecuteInProcessResult, slack_server: FakeSlack
) -> None:
    result = _evaluate(instance, failed_run, SlackResource(webhook_url="", dagster_url=DAGSTER_URL))

    assert isinstance(result, dg.SkipReason)
    assert "SLACK_WEBHOOK_URL is empty" in (result.skip_message or "")
    assert slack_server.requests == []


def test_webhook_error_raises_without_leaking_the_webhook_secret(
    instance: dg.DagsterInstance, failed_run: dg.ExecuteInProcessResult, slack_server: FakeSlack
) -> None:
    slack_server.status = 500

    with pytest.raises(SlackPostError, match="HTTP 500") as raised:
        _evaluate(instance, failed_run, _slack(slack_server))

    assert "internal_error" in str(raised.value)
    assert "secret-token" not in str(raised.value)
    assert len(slack_server.requests) == 1


@pytest.mark.parametrize("status", [200, 500])
def test_sensor_tick_reports_the_post_and_advances_the_cursor(
    instance: dg.DagsterInstance, slack_server: FakeSlack, status: int
) -> None:
    """Through Dagster's own tick evaluation: a failed post marks the tick failed, once, not retried."""
    slack_server.status = status
    resources = {"slack": _slack(slack_server)}
    first = slack_on_run_failure.evaluate_tick(
        dg.build_sensor_context(instance=instance, resources=resources)
    )
    assert first.cursor  # the first tick only places the cursor after the newest existing event
    run = _fail_run(instance)

    tick = slack_on_run_failure.evaluate_tick(
        dg.build_sensor_context(instance=instance, cursor=first.cursor, resources=resources)
    )

    reactions = list(tick.dagster_run_reactions or [])
    assert len(reactions) == 1
    assert reactions[0].dagster_run is not None
    assert reactions[0].dagster_run.run_id == run.run_id
    error = reactions[0].error
    if status == 200:
        assert error is None
    else:
        assert error is not None
        assert "HTTP 500" in error.to_string()
        assert "secret-token" not in error.to_string()
    assert tick.cursor != first.cursor
    assert len(slack_server.requests) == 1
    assert run.run_id in slack_server.requests[0][1]["text"]


@dg.op
def noop() -> None:
    pass


@dg.job
def quiet_job() -> None:
    noop()


def test_run_failed_outside_any_step_posts_the_run_error(
    instance: dg.DagsterInstance, slack_server: FakeSlack
) -> None:
    run = instance.create_run_for_job(job_def=quiet_job)
    instance.report_run_failed(run, message="Run worker crashed: exit code 137")  # as run monitoring does
    failed = instance.get_run_by_id(run.run_id)
    assert failed is not None
    records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    failure_event = records[0].event_log_entry.dagster_event
    assert failure_event is not None
    context = dg.build_run_status_sensor_context(
        sensor_name=SLACK_ON_RUN_FAILURE,
        dagster_instance=instance,
        dagster_run=failed,
        dagster_event=failure_event,
        resources={"slack": _slack(slack_server)},
    ).for_run_failure()

    assert slack_on_run_failure(context) is None

    [(_, payload)] = slack_server.requests
    assert "Run worker crashed: exit code 137" in payload["text"]
    assert f"/runs/{run.run_id}" in payload["text"]
    assert "quiet_job" in _dump(payload["blocks"])


def test_sensor_watches_every_job_in_the_code_location_and_starts_running() -> None:
    assert slack_on_run_failure.name == SLACK_ON_RUN_FAILURE
    assert slack_on_run_failure.default_status == dg.DefaultSensorStatus.RUNNING
    assert slack_on_run_failure.required_resource_keys == {"slack"}


def test_payload_escapes_trims_and_caps_steps() -> None:
    failures = [
        StepFailure(step_key=f"step_{i}", asset_keys=(f"a/{i}",), error="KeyError: <missing> & " + "x" * 2000)
        for i in range(MAX_STEPS_SHOWN + 3)
    ]

    payload = build_failure_payload(
        run_id="r-1",
        job_name="__ASSET_JOB",
        run_url="http://ui/runs/r-1",
        step_failures=failures,
        partition_key="2026-01-01",
    )

    blocks = payload["blocks"]
    step_sections = [b for b in blocks if b["type"] == "section" and "text" in b]
    assert len(step_sections) == MAX_STEPS_SHOWN
    assert "KeyError: &lt;missing&gt; &amp; x" in step_sections[0]["text"]["text"]
    assert "<missing>" not in _dump(payload)
    assert len(step_sections[0]["text"]["text"]) < MAX_ERROR_CHARS + 100
    assert "…and 3 more failed steps" in _dump(blocks)
    assert "2026-01-01" in _dump(blocks)
    assert "<http://ui/runs/r-1|r-1>" in _dump(blocks)
    assert len(blocks) <= 50  # Slack's limit per message
    assert payload["text"].startswith("Dagster run r-1 of __ASSET_JOB failed: http://ui/runs/r-1")


def test_payload_shows_the_run_error_when_no_step_failed() -> None:
    payload = build_failure_payload(
        run_id="r-2",
        job_name="job",
        run_url="http://ui/runs/r-2",
        step_failures=[],
        run_error="Run worker crashed",
    )

    assert "Run worker crashed" in payload["text"]
    assert "```Run worker crashed```" in _dump(payload["blocks"])


def test_resource_builds_run_links_and_is_off_without_a_webhook() -> None:
    assert (
        SlackResource(dagster_url="http://127.0.0.1:3000/").run_url("abc") == "http://127.0.0.1:3000/runs/abc"
    )
    assert SlackResource(webhook_url="").post({"text": "hi"}) is False


def test_unreachable_webhook_raises_a_clear_error() -> None:
    slack = SlackResource(webhook_url=f"http://127.0.0.1:{free_port()}{WEBHOOK_PATH}", timeout_s=2)

    with pytest.raises(SlackPostError, match="not reachable") as raised:
        slack.post({"text": "hi"})

    assert "secret-token" not in str(raised.value)
