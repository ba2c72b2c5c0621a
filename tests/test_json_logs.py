"""CLICKSTREAM_LOG_FORMAT=json: one JSON object per line from the producer, the API, the pipeline exporter and
Dagster's runs (clickstream_dagster/logs.py), each checked on the real process's output."""

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
import yaml

from clickstream_dagster.data.generator import generate
from clickstream_dagster.logs import JsonFormatter, configure_logging, log_format
from clickstream_dagster.stack.dagster import JSON_RUN_LOGS
from clickstream_dagster.stack.process import free_port

JSON_ENV = {"CLICKSTREAM_LOG_FORMAT": "json"}


def _objects(text: str) -> list[dict[str, Any]]:
    """Every non-empty line as a JSON object (fails on the first line that is not one)."""
    out = []
    for line in text.splitlines():
        if line.strip():
            obj = json.loads(line)
            assert isinstance(obj, dict), line
            assert {"ts", "level", "logger", "message"} <= obj.keys(), line
            out.append(obj)
    return out


def test_the_format_is_chosen_by_the_environment(capsys: pytest.CaptureFixture[str]) -> None:
    assert log_format({}) == "text" and log_format({"CLICKSTREAM_LOG_FORMAT": "JSON"}) == "json"
    with pytest.raises(ValueError, match="expected one of text, json"):
        log_format({"CLICKSTREAM_LOG_FORMAT": "xml"})
    configure_logging(service="unit", env=JSON_ENV)
    try:
        logging.getLogger("clickstream.test").warning("hello %s", "world")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("clickstream.test").exception("failed")
    finally:
        logging.getLogger().handlers.clear()
    first, second = _objects(capsys.readouterr().err)
    assert first["message"] == "hello world" and first["level"] == "WARNING" and first["service"] == "unit"
    assert first["ts"].endswith("+00:00")
    assert second["level"] == "ERROR" and "RuntimeError: boom" in second["exception"]


def test_the_producer_logs_json(
    bootstrap_servers: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    generate(tmp_path, 2_000, seed=5)
    topic = topic_factory(partitions=3)
    env = {**os.environ, **JSON_ENV, "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers}
    cmd = [sys.executable, "-m", "clickstream_dagster.cli", "produce", "--file", str(tmp_path / "events.csv"),
           "--topic", topic]  # fmt: skip
    first = subprocess.run(
        [*cmd, "--limit", "500"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert first.returncode == 0, first.stderr
    again = subprocess.run(
        [*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert again.returncode == 0, again.stderr
    logged = _objects(first.stderr) + _objects(again.stderr)
    assert any(o["message"].startswith("resuming after lines already in the topic") for o in logged)
    assert {o["service"] for o in logged} == {"producer"}


def test_the_api_and_the_exporter_log_json(pg_url: str, bootstrap_servers: str, tmp_path: Path) -> None:
    env = {**os.environ, **JSON_ENV, "DATABASE_URL": pg_url, "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers}
    outputs = {}
    runs: tuple[tuple[str, str, list[str], dict[str, str]], ...] = (
        # The API on a database that is down: it starts anyway and says why (its own logger), and logs the
        # request (uvicorn's access log) and its start (uvicorn's).
        (
            "api",
            "clickstream_dagster.api",
            ["--access-log"],
            {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"},
        ),
        ("exporter", "clickstream_dagster.monitoring", [], {}),
    )
    for name, module, extra, extra_env in runs:
        port = free_port()
        log = tmp_path / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", module, "--port", str(port), *extra],
                env={**env, **extra_env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            path = "/health" if name == "api" else "/metrics"
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}{path}", timeout=15)  # /health waits for the pool
                    break
                except httpx.TransportError:
                    assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                    time.sleep(0.2)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
        outputs[name] = _objects(log.read_text())
    api = outputs["api"]
    assert any("Uvicorn running on" in o["message"] for o in api), api  # uvicorn's own records
    assert any(
        o["logger"] == "clickstream_dagster.api.store" and "not reachable" in o["message"] for o in api
    )
    assert any(o["logger"] == "uvicorn.access" and "GET /health" in o["message"] for o in api)
    assert {o["service"] for o in api} == {"api"}
    assert any("pipeline metrics on" in o["message"] for o in outputs["exporter"])


@dg.asset
def logs_something(context: dg.AssetExecutionContext) -> None:
    context.log.info("hello from a run")


def test_runs_log_json_with_the_instance_config_up_writes(capfd: pytest.CaptureFixture[str]) -> None:
    python_logs = yaml.safe_load("python_logs:\n" + JSON_RUN_LOGS)["python_logs"]
    with dg.instance_for_test(overrides={"python_logs": python_logs}) as instance:
        result = dg.materialize([logs_something], instance=instance)
    assert result.success
    lines = [o for o in _parse_json_lines(capfd.readouterr().err) if o.get("service") == "dagster-run"]
    hello = [o for o in lines if "hello from a run" in o["message"]]
    assert hello and hello[0]["run_id"] == result.run_id and hello[0]["step_key"] == "logs_something"
    assert any(o.get("event_type") in ("RUN_SUCCESS", "PIPELINE_SUCCESS") for o in lines)  # (its legacy name)


def _parse_json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON lines of a stream that also holds Dagster's own plain console output."""
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_json_formatter_carries_dagster_fields() -> None:
    record = logging.LogRecord("dagster", logging.INFO, __file__, 1, "j - r1 - s - done", (), None)
    event = type("Event", (), {"event_type_value": "STEP_SUCCESS"})()
    meta = {"run_id": "r1", "job_name": "j", "step_key": "s", "dagster_event": event, "orig_message": "done"}
    record.dagster_meta = meta
    obj = json.loads(JsonFormatter("dagster-run").format(record))
    assert obj["run_id"] == "r1" and obj["job_name"] == "j" and obj["step_key"] == "s"
    assert obj["event_type"] == "STEP_SUCCESS" and obj["message"] == "done"
