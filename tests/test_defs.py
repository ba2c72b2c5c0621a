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


def test_recommender_is_retrained_daily_and_its_gate_decides_without_failing(service_env: None) -> None:
    """The gate's "keep the incumbent" is no failure: a non-blocking check that reports the decision, and a
    promoted_model whose output is optional, so the serving tables after it are skipped when nothing is
    promoted."""
    repo = definitions.defs.get_repository_def()
    schedule = repo.get_schedule_def("daily_retraining")
    assert schedule.cron_schedule == "0 3 * * *"
    assert schedule.job_name == "train_recommender"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    job = repo.get_job("train_recommender")
    assert job.tags.get("dagster/max_retries") == "0"  # an error is the operator's to look at first
    specs = [s for c in definitions.defs.asset_checks or [] for s in c.check_specs]
    [spec] = [s for s in specs if s.name == "promotion_gate"]
    assert not spec.blocking and spec.asset_key == dg.AssetKey("candidate_model")
    promoted = definitions.defs.get_assets_def("promoted_model")
    assert not promoted.op.outs["result"].is_required
    graph = definitions.defs.resolve_asset_graph()
    for key in ("recommendations", "similar_items"):
        assert dg.AssetKey("promoted_model") in graph.get(dg.AssetKey(key)).parent_keys
