"""The dashboard's data layer: pure helpers, and reading Dagster through a real webserver's GraphQL API."""

from __future__ import annotations

import inspect
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from clickstream_dagster.assets import ingestion
from clickstream_dagster.clients import dagster as dagster_client
from clickstream_dagster.clients import dagster_queries
from clickstream_dagster.dashboard import models, pipeline_health, sources
from clickstream_dagster.stack.process import free_port
from tests.dashboard.conftest import ROOT, FilledStack
from tests.dashboard.filler import LAGS, RAW_EVENTS_MESSAGES, RAW_EVENTS_QUARANTINED, WINDOWED_STATS_ROWS

# metadataEntries as the webserver serves them for DashboardDagsterHealth's `Materialization` fragment.
ENTRIES = [
    {"__typename": "IntMetadataEntry", "label": "consumer_lag_after_run", "intRepr": "42"},
    {"__typename": "IntMetadataEntry", "label": "messages_read", "intRepr": "5000000000"},  # > 32 bits
    {"__typename": "FloatMetadataEntry", "label": "seconds", "floatRepr": "1.5"},
    {"__typename": "FloatMetadataEntry", "label": "ratio", "floatRepr": "nan"},
    {"__typename": "JsonMetadataEntry", "label": "quarantine_reasons"},
    {"__typename": "IntMetadataEntry", "label": "broken", "intRepr": "not a number"},
]


def test_metadata_values_reads_the_graphql_entries() -> None:
    values = pipeline_health.metadata_values(ENTRIES)
    assert values.keys() == {"consumer_lag_after_run", "messages_read", "seconds", "ratio"}
    assert values["consumer_lag_after_run"] == 42
    assert values["messages_read"] == 5_000_000_000
    assert values["seconds"] == 1.5
    assert pipeline_health.metadata_values(None) == {}


def test_graphql_errors_become_dashboard_errors() -> None:
    address = "http://127.0.0.1:3000"
    assert dagster_client.graphql_data({"data": {"x": 1}}, 200, address) == {"x": 1}
    rejected = {"data": None, "errors": [{"message": "Cannot query field 'nope' on type 'Query'."}]}
    with pytest.raises(dagster_client.DagsterError, match=r"could not answer the query: Cannot query"):
        dagster_client.graphql_data(rejected, 400, address)
    storage_down = {
        "data": None,
        "errors": [
            {
                "message": "(psycopg2.OperationalError) server closed the connection unexpectedly\n\tThis...",
                "path": ["SUCCESS", "count"],
            }
        ],
    }
    with pytest.raises(dagster_client.DagsterError) as err:
        dagster_client.graphql_data(storage_down, 500, address)
    assert str(err.value) == (
        f"Dagster webserver at {address} could not answer the query (SUCCESS.count): "
        "(psycopg2.OperationalError) server closed the connection unexpectedly"
    )
    with pytest.raises(
        dagster_client.DagsterError, match=r"HTTP 404 without a GraphQL response.*CLICKSTREAM_DAGSTER_URL"
    ):
        dagster_client.graphql_data(None, 404, address)

    python_error = {"assetsOrError": {"__typename": "PythonError", "message": "KeyError: 'x'\n  File ..."}}
    with pytest.raises(
        dagster_client.DagsterError, match=r"answered `assetsOrError` with PythonError: KeyError: 'x'\.$"
    ):
        dagster_client.graphql_result(python_error, "assetsOrError", "AssetConnection", address)
    missing = {"rawEvents": {"__typename": "AssetNotFoundError", "message": "not found"}}
    assert (
        dagster_client.graphql_result(missing, "rawEvents", "Asset", address, absent="AssetNotFoundError")
        is None
    )


def test_raw_events_still_reports_the_metadata_the_dashboard_reads() -> None:
    source = inspect.getsource(ingestion)
    for key in (
        pipeline_health.LAG_METADATA_KEY,
        pipeline_health.ROW_COUNT_METADATA_KEY,
        *pipeline_health.INGEST_METADATA_KEYS,
    ):
        assert f'"{key}"' in source, f"raw_events no longer reports {key!r}: update the dashboard"


def test_importing_the_dashboard_leaves_dagster_out() -> None:
    code = (
        "import sys\n"
        "import clickstream_dagster.dashboard.traffic, clickstream_dagster.dashboard.pipeline_health\n"
        "import clickstream_dagster.dashboard.models, clickstream_dagster.dashboard.charts\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('dagster', 'dagster_graphql'))\n"
        "assert 'dagster' not in sys.modules, loaded\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_metrics_long_flattens_validation_and_test_per_model() -> None:
    metrics = {
        "validation": {"ndcg@10": 0.1, "note": "text is not a metric"},
        "test": {"lightfm": {"ndcg@10": 0.2, "auc": 0.9}, "popularity": {"ndcg@10": 0.15}},
        "gate": {"passed": True, "margin": 0.01},
    }
    rows = models.metrics_long(3, "promoted", "lightfm", metrics)
    assert {(r["split"], r["model"], r["metric"], r["value"]) for r in rows} == {
        ("validation", "lightfm", "ndcg@10", 0.1),
        ("test", "lightfm", "ndcg@10", 0.2),
        ("test", "lightfm", "auc", 0.9),
        ("test", "popularity", "ndcg@10", 0.15),
    }
    assert all(r["version"] == 3 and r["status"] == "promoted" for r in rows)
    assert models.metrics_long(1, "candidate", "lightfm", None) == []


def test_small_formatters() -> None:
    assert sources.category_text([1338, 1213, 250]) == "250 > 1213 > 1338"
    assert sources.category_text(None) == ""
    assert pipeline_health.asset_name(["raw_events"]) == "raw_events"
    assert pipeline_health.asset_name(["ml", "model"]) == "ml/model"
    stamp = pipeline_health.epoch_ms("1433000000123")
    assert stamp is not None
    assert stamp.isoformat() == "2015-05-30T15:33:20.123000+00:00"
    assert pipeline_health.epoch_ms(None) is None
    with_password = "postgresql://me:secret@db:5432/x"  # pragma: allowlist secret
    assert sources.redact_url(with_password) == "postgresql://me@db:5432/x"
    assert sources.redact_url("postgresql://me@db/x") == "postgresql://me@db/x"


# ---- against the real webserver that serves the filled Dagster instance -------------------------------------


@pytest.fixture
def webserver(filled_stack: FilledStack) -> Iterator[dagster_client.DagsterWebserver]:
    client = dagster_client.DagsterWebserver(filled_stack.dagster_url)
    yield client
    client.close()


def test_dagster_health_is_what_the_runs_materialized(
    webserver: dagster_client.DagsterWebserver, filled_stack: FilledStack
) -> None:
    health = pipeline_health.dagster_health(webserver)
    runs = filled_stack.dagster_runs
    assert health.available, health.note
    assert health.address == filled_stack.dagster_url

    assets = health.assets.set_index("asset")
    assert sorted(assets.index) == ["raw_events", "windowed_stats"]
    assert assets.loc["raw_events", "rows"] == RAW_EVENTS_MESSAGES
    assert assets.loc["raw_events", "run_id"] == runs.raw_events[-1]
    assert assets.loc["windowed_stats", "rows"] == WINDOWED_STATS_ROWS
    assert assets.loc["windowed_stats", "run_id"] == runs.windowed_stats
    assert str(assets["materialized_at"].dt.tz) == "UTC"

    raw = health.raw_events
    assert raw["run_id"].tolist() == runs.raw_events[::-1]  # newest first
    assert raw["lag"].tolist() == list(LAGS)[::-1]
    assert health.kafka_lag == LAGS[-1]
    assert set(raw["messages_read"]) == {RAW_EVENTS_MESSAGES}
    assert set(raw["rows_inserted"]) == {RAW_EVENTS_MESSAGES - RAW_EVENTS_QUARANTINED}
    assert set(raw["rows_quarantined"]) == {RAW_EVENTS_QUARANTINED}
    assert raw["materialized_at"].is_monotonic_decreasing
    assert raw["materialized_at"].iloc[0] == assets.loc["raw_events", "materialized_at"]

    assert health.runs.to_dict("records") == [{"status": "SUCCESS", "runs": len(runs.raw_events) + 1}]


def test_run_statuses_are_those_the_webserver_serves(webserver: dagster_client.DagsterWebserver) -> None:
    served = webserver.query('{ __type(name: "RunStatus") { enumValues { name } } }')
    assert {v["name"] for v in served["__type"]["enumValues"]} == set(dagster_queries.RUN_STATUSES)


def test_a_query_the_webserver_rejects_is_a_clear_error(webserver: dagster_client.DagsterWebserver) -> None:
    with pytest.raises(dagster_client.DagsterError) as err:
        webserver.query("{ nope }")
    assert str(err.value) == (
        f"Dagster webserver at {webserver.address} could not answer the query: "
        "Cannot query field 'nope' on type 'Query'."
    )
    assert not isinstance(err.value, dagster_client.WebserverUnavailable)
    assert "__typename" in webserver.query("{ __typename }")  # it is not marked as down


def test_a_url_that_is_not_the_graphql_endpoint_is_a_clear_note(filled_stack: FilledStack) -> None:
    elsewhere = dagster_client.DagsterWebserver(f"{filled_stack.dagster_url}/not-dagster")
    try:
        health = pipeline_health.dagster_health(elsewhere)
    finally:
        elsewhere.close()
    assert not health.available
    assert health.note is not None
    assert "without a GraphQL response" in health.note
    assert "CLICKSTREAM_DAGSTER_URL" in health.note


def test_an_unreachable_webserver_is_reported_at_once_and_remembered() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    webserver = dagster_client.DagsterWebserver(url, retry_after_s=30)
    try:
        started = time.monotonic()
        health = pipeline_health.dagster_health(webserver)
        assert time.monotonic() - started < webserver.connect_timeout_s + 1
        assert not health.available
        assert health.note is not None
        assert health.note.startswith(f"Dagster webserver not reachable at {url} (")
        assert "start Dagster with `make up`" in health.note
        assert "CLICKSTREAM_DAGSTER_URL" in health.note
        assert health.kafka_lag is None
        with pytest.raises(dagster_client.WebserverUnavailable) as first:
            webserver.query("{ __typename }")
        with pytest.raises(dagster_client.WebserverUnavailable) as again:
            webserver.query("{ __typename }")
        assert again.value is first.value  # no new attempt within retry_after_s
    finally:
        webserver.close()


def test_a_webserver_that_does_not_answer_costs_one_timeout() -> None:
    """A port that accepts connections but never answers: one short read timeout, then the note at once."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        webserver = dagster_client.DagsterWebserver(url, read_timeout_s=0.5, retry_after_s=30)
        try:
            started = time.monotonic()
            health = pipeline_health.dagster_health(webserver)
            first = time.monotonic() - started
            assert health.note is not None
            assert f"not reachable at {url} (no answer within 0.5 s)" in health.note
            started = time.monotonic()
            assert pipeline_health.dagster_health(webserver).note == health.note
            assert time.monotonic() - started < 0.2 < first
        finally:
            webserver.close()
