"""The dashboard script under Streamlit's AppTest, against real PostgreSQL databases (filled, empty, absent) and
a real Dagster webserver (or none listening)."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
from streamlit.testing.v1 import AppTest

from clickstream_dagster.analytics.sessions import session_gap_ms
from clickstream_dagster.dashboard import traffic
from clickstream_dagster.stack.process import free_port
from tests.analytics import sessions_reference
from tests.dashboard.conftest import APP, FilledStack
from tests.dashboard.filler import (
    LAGS,
    MODEL_VERSIONS,
    PROMOTED_VERSION,
    RAW_EVENTS_MESSAGES,
    RECOMMENDATIONS_EACH,
    WINDOWED_STATS_ROWS,
    registry_metrics,
)

UNKNOWN_VISITOR = "unknown visitor (popular fallback)"


def run_app(monkeypatch: pytest.MonkeyPatch, events_url: str, dagster_url: str) -> AppTest:
    """The page with the events database at `events_url` and Dagster's webserver at `dagster_url`."""
    monkeypatch.setenv("DATABASE_URL", events_url)
    monkeypatch.setenv("CLICKSTREAM_DAGSTER_URL", dagster_url)
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def unreachable_url(database: str) -> str:
    return f"postgresql://postgres@127.0.0.1:{free_port()}/{database}"


def unreachable_webserver() -> str:
    return f"http://127.0.0.1:{free_port()}"


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def figure(at: AppTest, key: str) -> dict[str, Any]:
    charts = [el for el in at.get("plotly_chart") if el.proto.id.endswith(f"-{key}")]
    assert len(charts) == 1, f"chart {key!r} not rendered"
    spec: dict[str, Any] = json.loads(charts[0].proto.spec)
    return spec


def values(array: Any) -> list[Any]:
    """A trace's x/y as a list, whether plotly wrote it plainly or as a typed array (bdata)."""
    if isinstance(array, dict) and "bdata" in array:
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"])).tolist()
    return list(array)


def table(at: AppTest, *columns: str) -> pd.DataFrame:
    found = [d.value for d in at.dataframe if set(columns) <= set(d.value.columns)]
    assert len(found) == 1, f"expected one table with columns {columns}, found {len(found)}"
    frame: pd.DataFrame = found[0]
    return frame


def texts(elements: Any) -> str:
    return "\n".join(str(e.value) for e in elements)


def test_every_section_shows_what_the_database_holds(
    monkeypatch: pytest.MonkeyPatch, filled_stack: FilledStack
) -> None:
    at = run_app(monkeypatch, filled_stack.events_url, filled_stack.dagster_url)
    events = filled_stack.filled.events
    assert not at.error, texts(at.error)
    assert not at.warning, texts(at.warning)

    # live traffic: totals, windows, event types, hourly pattern
    shown = metrics(at)
    assert shown["Events ingested"] == f"{len(events):,}"
    assert shown["Quarantined"] == str(filled_stack.filled.quarantined)
    windows = events.groupby(events["timestamp"] // 300_000).ngroups
    assert shown["5-minute windows"] == f"{windows:,}"
    newest = pd.Timestamp(events["timestamp"].max(), unit="ms", tz="UTC")
    assert shown["Newest event (UTC)"] == newest.strftime("%Y-%m-%d")

    # by default the last 7 days of windows, per hour
    window = (events["timestamp"] // 300_000) * 300_000
    week = events[window > window.max() - 7 * 86_400_000]["event"].value_counts()
    windowed = figure(at, "windowed_stats")
    assert {t["name"]: sum(values(t["y"])) for t in windowed["data"]} == {
        "views": week["view"],
        "add-to-carts": week["addtocart"],
        "transactions": week["transaction"],
    }

    stats = table(at, "event", "event_count", "unique_users")
    expected = events.groupby("event").agg(n=("timestamp", "size"), users=("visitorid", "nunique"))
    assert dict(zip(stats["event"], stats["event_count"], strict=True)) == expected["n"].to_dict()
    assert dict(zip(stats["event"], stats["unique_users"], strict=True)) == expected["users"].to_dict()
    frequency = figure(at, "event_frequency")["data"][0]
    assert values(frequency["x"]) == ["views", "add-to-carts", "transactions"]
    assert values(frequency["y"]) == [
        filled_stack.filled.counts[e] for e in ("view", "addtocart", "transaction")
    ]

    # The hourly pattern covers the last 28 days of windows, the top items the last 24 hours of event time.
    recent = events[window > window.max() - traffic.HOURLY_PATTERN_DAYS * 86_400_000]
    last_day = events[events["timestamp"] > events["timestamp"].max() - traffic.TOP_ITEMS_HOURS * 3_600_000]
    assert 0 < len(last_day) < len(recent) < len(events)
    hourly = figure(at, "hourly_pattern")["data"]
    by_hour = recent.groupby(pd.to_datetime(recent["timestamp"], unit="ms", utc=True).dt.hour).size()
    views = next(t for t in hourly if t["name"] == "views")
    assert len(values(views["x"])) == 24
    all_hours = np.sum([values(t["customdata"]) for t in hourly], axis=0).ravel().tolist()
    assert all_hours == [int(by_hour.get(h, 0)) for h in range(24)]

    # top items, with their categories from `items`
    top = table(at, "itemid", "views", "category")
    counts = (
        last_day.groupby("itemid")
        .size()
        .reset_index(name="n")
        .sort_values(["n", "itemid"], ascending=[False, True])
    )
    assert top["itemid"].tolist() == counts["itemid"].head(10).tolist()
    assert top["events"].tolist() == counts["n"].head(10).tolist()
    assert top["category"].str.len().gt(0).all()
    with psycopg.connect(filled_stack.events_url) as conn:
        row = conn.execute(
            "SELECT categoryid FROM items WHERE itemid = %s", (int(top["itemid"].iloc[0]),)
        ).fetchone()
    assert row is not None
    assert top["categoryid"].iloc[0] == row[0]
    assert len(figure(at, "top_items")["data"]) == 3

    # shoppers: the funnel, its rates, sessions over time and retention are pandas' over the same events
    recomputed = sessions_reference.recompute(events, filled_stack.filled.categories, session_gap_ms())
    s = recomputed["sessions"]
    viewed, carted, bought = s["views"] > 0, s["addtocarts"] > 0, s["transactions"] > 0
    assert shown["Sessions"] == f"{len(s):,}"
    assert shown["View → purchase"] == f"{(viewed & bought).sum() / viewed.sum():.1%}"
    assert shown["Cart abandonment"] == f"{(carted & ~bought).sum() / carted.sum():.1%}"
    assert shown["Bounce rate"] == f"{s['bounced'].mean():.1%}"
    funnel = figure(at, "funnel")["data"][0]
    assert values(funnel["x"]) == [viewed.sum(), (viewed & carted).sum(), (viewed & carted & bought).sum()]
    # by default the last 48 hours of session starts, per hour
    over_time = figure(at, "sessions_over_time")["data"]
    per_hour = next(t for t in over_time if t["name"] == "sessions")
    hours = (s["start_ms"] // 3_600_000) * 3_600_000
    in_range = int((hours > hours.max() - 2 * 86_400_000).sum())
    assert 0 < in_range < len(s) and sum(values(per_hour["y"])) == in_range
    heat = figure(at, "retention")["data"][0]
    cohorts = recomputed["retention_counts"]
    assert len(values(heat["y"])) == min(12, cohorts["cohort"].nunique())
    assert figure(at, "category_conversion")["data"]

    # pipeline health: Dagster's webserver, the quarantine, the ledger
    assert shown["Kafka lag (messages)"] == f"{LAGS[-1]:,}"
    assert shown["raw_events materialized"].endswith("ago")
    assert shown["Quarantined rows"] == str(filled_stack.filled.quarantined)
    assert shown["Offset ranges reconciled"] == "3 of 3"
    assets = table(at, "asset", "materialized_at", "rows")
    assert set(assets["asset"]) == {"raw_events", "windowed_stats"}
    lag = figure(at, "kafka_lag")["data"][0]
    assert values(lag["y"]) == list(LAGS)
    reasons = figure(at, "quarantine_reasons")["data"]
    assert dict(zip(values(reasons[0]["y"]), values(reasons[0]["x"]), strict=True)) == dict(
        filled_stack.filled.reasons
    )
    ledger = table(at, "kafka_partition", "messages_read", "rows_inserted", "rows_quarantined")
    assert ledger["rows_inserted"].sum() == len(events)
    assert ledger["rows_quarantined"].sum() == filled_stack.filled.quarantined

    # models: every version, its status, and a metric across versions
    registry = table(at, "version", "status", "reason")
    assert registry["version"].tolist() == list(range(1, MODEL_VERSIONS + 1))
    assert registry.loc[registry["version"] == PROMOTED_VERSION, "status"].item() == "promoted"
    assert "test ndcg@10" in registry.columns
    # The gate's evidence beside each model: its estimate, interval and sample size, as stored.
    evidence = table(at, "version", "validation estimate", "interval low", "interval high", "visitors")
    for version in range(1, MODEL_VERSIONS + 1):
        stored = registry_metrics(version)["evidence"]["candidate"]["estimate"]
        shown_row = evidence.loc[evidence["version"] == version].iloc[0].to_dict()
        assert float(shown_row["validation estimate"]) == pytest.approx(stored["mean"])
        assert float(shown_row["interval low"]) == pytest.approx(stored["low"])
        assert float(shown_row["interval high"]) == pytest.approx(stored["high"])
        assert int(shown_row["visitors"]) == stored["visitors"]
    assert at.selectbox(key="model_metric").value == "ndcg@10"
    model_chart = figure(at, "model_metrics")
    names = {t["name"] for t in model_chart["data"]}
    assert names == {"lightfm (validation)", "popularity (validation)", "lightfm (test)", "popularity (test)"}
    for trace in model_chart["data"]:
        assert values(trace["x"]) == [f"v{v}" for v in range(1, MODEL_VERSIONS + 1)]

    # recommendation explorer: the first visitor with recommendations, history beside recommendations
    visitor = filled_stack.filled.recommended[0]
    assert at.selectbox(key="visitor").value == visitor
    history = table(at, "event_time", "event", "itemid")
    mine = events[events["visitorid"] == visitor]
    assert len(history) == min(len(mine), 25)
    assert f"{len(mine):,} events" in texts(at.markdown)
    recs = table(at, "rank", "itemid", "score", "familiar_category")
    assert recs["rank"].tolist() == list(range(1, RECOMMENDATIONS_EACH + 1))
    assert not set(recs["itemid"]) & set(mine["itemid"])


def test_explorer_falls_back_to_the_popular_list(
    monkeypatch: pytest.MonkeyPatch, filled_stack: FilledStack
) -> None:
    at = run_app(monkeypatch, filled_stack.events_url, filled_stack.dagster_url)
    popular = filled_stack.filled.popular[:10]

    at.selectbox(key="visitor").set_value(UNKNOWN_VISITOR).run()
    assert not at.exception
    assert "unknown visitor gets: the popular list" in texts(at.markdown)
    assert table(at, "rank", "itemid", "visitors")["itemid"].tolist() == popular

    events = filled_stack.filled.events
    stranger = int(
        events.loc[~events["visitorid"].isin(filled_stack.filled.recommended), "visitorid"].iloc[0]
    )
    at.text_input(key="visitor_id").input(str(stranger)).run()
    assert not at.exception
    assert f"Visitor {stranger} has no personal recommendations" in texts(at.markdown)
    assert table(at, "rank", "itemid", "visitors")["itemid"].tolist() == popular
    assert len(table(at, "event_time", "event", "itemid")) == min(
        int((events["visitorid"] == stranger).sum()), 25
    )

    at.selectbox(key="window_range").set_value("Last 24 hours, 5-minute windows").run()
    assert not at.exception
    recent = figure(at, "windowed_stats")["data"]
    newest = events["timestamp"].max() // 300_000 * 300_000
    in_range = events[events["timestamp"] // 300_000 * 300_000 > newest - 24 * 3_600_000]
    assert sum(sum(values(t["y"])) for t in recent) == len(in_range)


def test_empty_database_explains_what_to_run(monkeypatch: pytest.MonkeyPatch, pg_url: str) -> None:
    at = run_app(monkeypatch, pg_url, unreachable_webserver())
    assert not at.error, texts(at.error)
    assert metrics(at)["Events ingested"] == "0"
    assert metrics(at)["Kafka lag (messages)"] == "—"
    notes = texts(at.info)
    assert "make demo" in notes
    assert "No model trained yet" in notes
    assert "No personal recommendations yet" in notes
    assert "No popular list yet" in notes
    assert "No sessions yet" in notes
    assert "Dagster webserver not reachable" in texts(at.warning)
    assert "CLICKSTREAM_DAGSTER_URL" in texts(at.warning)
    assert texts(at.success).startswith("Nothing quarantined")
    assert not at.get("plotly_chart")


def test_a_range_that_does_not_reconcile_is_flagged(monkeypatch: pytest.MonkeyPatch, pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            "INSERT INTO ingested_ranges (kafka_topic, kafka_partition, start_offset, end_offset, messages_read,"
            " rows_inserted, rows_quarantined) VALUES ('t', 0, 0, 10, 10, 10, 0), ('t', 1, 0, 10, 10, 7, 1)"
        )
    at = run_app(monkeypatch, pg_url, unreachable_webserver())
    assert metrics(at)["Offset ranges reconciled"] == "1 of 2"
    assert "1 range does not reconcile" in texts(at.error)
    off = table(at, "start_offset", "unaccounted")
    assert off["unaccounted"].tolist() == [2]


def test_offsets_without_messages_lost_offsets_and_gaps_are_shown(
    monkeypatch: pytest.MonkeyPatch, pg_url: str
) -> None:
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            "INSERT INTO ingested_ranges (kafka_topic, kafka_partition, start_offset, end_offset, messages_read,"
            " rows_inserted, rows_quarantined, skipped_control, skipped_aborted, lost_retention)"
            " VALUES ('t', 0, 0, 10, 6, 6, 0, 2, 2, 0), ('t', 0, 20, 30, 7, 7, 0, 0, 0, 3),"
            " ('t', 1, 0, 10, 9, 9, 0, 0, 0, 0)"  # one offset unaccounted for
        )
        conn.execute(
            "INSERT INTO ingestion_repairs (kafka_topic, kafka_partition, start_offset, end_offset, attempts)"
            " VALUES ('t', 0, 10, 20, 2)"
        )
    at = run_app(monkeypatch, pg_url, unreachable_webserver())
    assert metrics(at)["Offset ranges reconciled"] == "2 of 3"
    errors = texts(at.error)
    assert "3 offsets were deleted by retention" in errors
    assert "1 gap in the ledger" in errors
    off = table(at, "start_offset", "offsets_unaccounted")
    assert off["offsets_unaccounted"].tolist() == [1]
    gaps = table(at, "start_offset", "attempts")
    assert gaps[["start_offset", "end_offset", "attempts", "open"]].values.tolist() == [[10, 20, 2, True]]


def test_unreachable_events_database_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    at = run_app(monkeypatch, unreachable_url("clickstream"), unreachable_webserver())
    message = texts(at.error)
    assert "Events database not reachable" in message
    assert "make up" in message
    assert "DATABASE_URL" in message
    assert not at.metric


def test_materialization_metadata_shown_is_what_the_runs_reported(
    monkeypatch: pytest.MonkeyPatch, filled_stack: FilledStack
) -> None:
    at = run_app(monkeypatch, filled_stack.events_url, filled_stack.dagster_url)
    runs = filled_stack.dagster_runs
    assets = table(at, "asset", "materialized_at", "rows", "run_id")
    shown = {a: (r, run) for a, r, run in zip(assets["asset"], assets["rows"], assets["run_id"], strict=True)}
    assert shown == {
        "raw_events": (RAW_EVENTS_MESSAGES, runs.raw_events[-1]),
        "windowed_stats": (WINDOWED_STATS_ROWS, runs.windowed_stats),
    }
    assert assets["materialized_at"].notna().all()
    assert metrics(at)["Kafka lag (messages)"] == f"{LAGS[-1]:,}"
    lag = figure(at, "kafka_lag")["data"][0]
    assert values(lag["y"]) == list(LAGS)  # oldest first, one point per raw_events run
    assert len(set(values(lag["x"]))) == len(LAGS)
    assert f"Runs in the last 24 h: success {len(runs.raw_events) + 1}" in texts(at.caption)


def test_unreachable_webserver_is_one_clear_note(
    monkeypatch: pytest.MonkeyPatch, filled_stack: FilledStack
) -> None:
    webserver = unreachable_webserver()
    at = run_app(monkeypatch, filled_stack.events_url, webserver)
    assert not at.error, texts(at.error)
    warning = texts(at.warning)
    assert f"Dagster webserver not reachable at {webserver}" in warning
    assert "make up" in warning
    assert "CLICKSTREAM_DAGSTER_URL" in warning
    assert "Needs Dagster's webserver" in texts(at.info)
    shown = metrics(at)
    assert shown["Kafka lag (messages)"] == "—"
    assert shown["raw_events materialized"] == "—"
    # everything from the events database is still there
    assert shown["Events ingested"] == f"{len(filled_stack.filled.events):,}"
    assert shown["Offset ranges reconciled"] == "3 of 3"
    assert not any(el.proto.id.endswith("-kafka_lag") for el in at.get("plotly_chart"))
