"""The code location loads with every asset, check, sensor and resource it declares."""

from __future__ import annotations

import dagster as dg
import pytest

from clickstream_dagster import definitions


@pytest.fixture
def service_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "CLICKSTREAM_TOPIC": "clickstream",
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/clickstream",
        "SPARK_REMOTE": "",
        "SLACK_WEBHOOK_URL": "",
        "CLICKSTREAM_DAGSTER_URL": "http://127.0.0.1:3000",
    }.items():
        monkeypatch.setenv(key, value)


def test_definitions_load_and_validate(service_env: None) -> None:
    dg.Definitions.validate_loadable(definitions.defs)
    repo = definitions.defs.get_repository_def()
    assert set(repo.get_top_level_resources()) == {"kafka", "postgres", "spark", "slack"}
    assert {s.name for s in repo.sensor_defs} >= {"slack_on_run_failure"}
