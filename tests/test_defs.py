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


def test_recommender_is_retrained_daily_behind_a_blocking_gate(service_env: None) -> None:
    repo = definitions.defs.get_repository_def()
    schedule = repo.get_schedule_def("daily_retraining")
    assert schedule.cron_schedule == "0 3 * * *"
    assert schedule.job_name == "train_recommender"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    job = repo.get_job("train_recommender")
    assert job.tags.get("dagster/max_retries") == "0"  # a rejected model is not retried
    specs = [s for c in definitions.defs.asset_checks or [] for s in c.check_specs]
    [spec] = [s for s in specs if s.name == "promotion_gate"]
    assert spec.blocking and spec.asset_key == dg.AssetKey("candidate_model")
