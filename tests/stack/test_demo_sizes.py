"""The main command (`clickstream demo`, what `make demo` runs) on data of every size a newcomer may bring:
events.csv alone of about 100, 3,000 and 30,000 events, and 30,000 events with the reference files, each in a
fresh stack of its own. Every run exits 0, every streaming table equals an independent pandas computation over
the CSV (and the Kafka topic holds exactly those messages), the API answers every visitor and never 503, the
summary says what is served and why, and Dagster holds no failed run. Small samples leave the promotion gate
without evidence: the popular lists are served, which is a result, not an error. One size runs twice: the
second run adds nothing and still exits 0."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import psycopg
import pytest

from clickstream_dagster.analytics.sessions import session_gap_ms
from clickstream_dagster.data.generator import generate
from clickstream_dagster.stack.config import StackConfig
from clickstream_dagster.stack.manager import Stack
from tests.analytics import sessions_reference
from tests.conftest import make_test_config
from tests.helpers import committed_in_topic

WINDOW_MS = 300_000
CASES = {
    # events, with the reference files, how the file is written (the real one's variants), runs
    "100-events-alone": (100, False, "sorted", 1),
    "3000-events-alone-float-ids": (3_000, False, "float_transaction_ids", 2),
    "30000-events-alone-shuffled": (30_000, False, "shuffled", 1),
    "30000-events-with-reference": (30_000, True, "sorted", 1),
}


def _raw_dir(path: Path, events: int, reference: bool, variant: str) -> Path:
    """Real-format RetailRocket files made by the project's generator; without the reference files (and the
    generator's marker) when the user brings events.csv alone."""
    generate(path, events, seed=events)
    (path / ".generated.json").unlink()
    if not reference:
        for name in ("category_tree.csv", "item_properties_part1.csv", "item_properties_part2.csv"):
            (path / name).unlink()
    frame = pd.read_csv(path / "events.csv", dtype={"transactionid": "Int64"})
    if variant == "shuffled":  # the real file is not sorted by time
        frame = frame.sample(frac=1.0, random_state=1)
    if variant == "float_transaction_ids":  # some copies write 14418.0
        frame["transactionid"] = frame["transactionid"].map(lambda v: "" if pd.isna(v) else f"{int(v)}.0")
    frame.to_csv(path / "events.csv", index=False)
    return path


def _env(cfg: StackConfig) -> dict[str, str]:
    external = ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "SPARK_REMOTE", "SLACK_WEBHOOK_URL")
    return {
        **{k: v for k, v in os.environ.items() if k not in external},
        **cfg.ports.to_env(),
        "CLICKSTREAM_DATA_DIR": str(cfg.data_dir),
        "CLICKSTREAM_TOPIC": cfg.topic,
    }


def _demo(cfg: StackConfig, raw: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clickstream_dagster.cli", "demo", "--raw-dir", str(raw)],
        env=_env(cfg),
        cwd=cfg.root,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )


@pytest.fixture(params=list(CASES), scope="module")
def demo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    events, reference, variant, runs = CASES[request.param]
    tmp = tmp_path_factory.mktemp(request.param)
    raw = _raw_dir(tmp / "raw", events, reference, variant)
    external = ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "SPARK_REMOTE", "SLACK_WEBHOOK_URL")
    cfg = make_test_config(tmp / "data", {k: v for k, v in os.environ.items() if k not in external})
    try:
        results = [_demo(cfg, raw) for _ in range(runs)]
        yield {"cfg": cfg, "raw": raw, "results": results, "events": events, "reference": reference}
    finally:
        Stack(cfg).down(log=lambda _m: None)


def _csv(raw: Path) -> pd.DataFrame:
    frame = pd.read_csv(raw / "events.csv", dtype={"transactionid": "Float64"})
    return frame.assign(transactionid=frame["transactionid"].astype("Int64"))


def test_every_run_exits_0_and_says_what_is_served(demo: dict) -> None:
    for result in demo["results"]:
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
        [serving] = [line for line in result.stdout.splitlines() if line.startswith("Serving: ")]
        with psycopg.connect(demo["cfg"].database_url) as conn:
            promoted = conn.execute("SELECT version FROM model_registry WHERE status = 'promoted'").fetchone()
            latest = conn.execute(
                "SELECT reason FROM model_registry WHERE selected ORDER BY version DESC LIMIT 1"
            ).fetchone()
        assert latest is not None
        if promoted is None:
            assert serving.startswith("Serving: no model is promoted (insufficient evidence: ")
            assert "the API answers every visitor from the popular and trending lists" in serving
        else:
            assert f"v{promoted[0]}" in serving
        assert latest[0] in serving
        assert "Traceback" not in result.stdout + result.stderr
    for again in demo["results"][1:]:  # a re-run resumes: every row is already in the topic
        n = demo["events"]
        assert f"read {n:,} rows = sent 0 + rejected 0 + already in topic {n:,}" in again.stdout


def test_the_streaming_tables_equal_an_independent_computation(demo: dict) -> None:
    cfg: StackConfig = demo["cfg"]
    csv = _csv(demo["raw"])
    assert len(csv) == demo["events"]
    with psycopg.connect(cfg.database_url) as conn:
        stored = pd.DataFrame(
            conn.execute(
                'SELECT "timestamp", visitorid, event::text, itemid, transactionid FROM clickstream_events'
            ).fetchall(),
            columns=["timestamp", "visitorid", "event", "itemid", "transactionid"],
        )
        quarantined = conn.execute("SELECT count(*) FROM quarantine").fetchone()
        windows = conn.execute(
            "SELECT (extract(epoch FROM window_start) * 1000)::bigint, event, event_count, unique_users, "
            "unique_items FROM windowed_stats ORDER BY 1, 2"
        ).fetchall()
        totals = conn.execute(
            "SELECT event, event_count, unique_users, unique_items FROM event_statistics ORDER BY 1"
        ).fetchall()
    assert quarantined == (0,)
    key = ["timestamp", "visitorid", "event", "itemid", "transactionid"]
    stored = stored.assign(transactionid=stored["transactionid"].astype("Int64"))
    pd.testing.assert_frame_equal(
        stored.sort_values(key).reset_index(drop=True)[key],
        csv.sort_values(key).reset_index(drop=True)[key],
        check_dtype=False,
    )
    csv_windows = csv.assign(window=csv["timestamp"] // WINDOW_MS * WINDOW_MS)
    counted = csv_windows.groupby(["window", "event"]).agg(
        n=("visitorid", "size"), users=("visitorid", "nunique"), items=("itemid", "nunique")
    )
    expected_windows = [
        (int(w), str(e), int(n), int(u), int(i))
        for w, e, n, u, i in counted.reset_index().itertuples(index=False)
    ]
    assert windows == sorted(expected_windows)
    by_event = csv.groupby("event")
    assert totals == [(str(e), len(g), g["visitorid"].nunique(), g["itemid"].nunique()) for e, g in by_event]
    # From Kafka's side: the topic holds exactly one message per event (a re-run sent nothing twice).
    in_topic = committed_in_topic(cfg.bootstrap_servers, cfg.topic, cfg.kafka_partitions)
    assert len(in_topic) == demo["events"]


def test_sessions_funnel_and_retention_equal_pandas_over_the_csv(demo: dict) -> None:
    """The demo filled the shopper-analytics tables, and they are pandas' over the CSV row for row (categories:
    the items' as the reference data gave them, unknown for events alone)."""
    cfg: StackConfig = demo["cfg"]
    csv = _csv(demo["raw"])
    with psycopg.connect(cfg.database_url) as conn:
        categories: dict[int, int] = dict(
            conn.execute("SELECT itemid, categoryid FROM items WHERE categoryid IS NOT NULL")
        )
        stored = sessions_reference.stored(conn)
    assert bool(categories) == demo["reference"]
    expected = sessions_reference.recompute(csv, categories, session_gap_ms())
    assert len(stored["sessions"]) > 0
    differences = sessions_reference.differences(expected, stored)
    assert not differences, differences
    for result in demo["results"]:  # the summary says how many
        assert re.search(rf"^  sessions +{len(expected['sessions']):,}$", result.stdout, re.MULTILINE)


def test_the_api_answers_every_visitor_and_the_stack_is_healthy(demo: dict) -> None:
    cfg: StackConfig = demo["cfg"]
    csv = _csv(demo["raw"])
    visitors = sorted(set(csv["visitorid"].tolist()))
    with psycopg.connect(cfg.database_url) as conn:
        listed = conn.execute(
            "SELECT count(DISTINCT itemid) FROM popular_items "
            "WHERE model_version = (SELECT max(model_version) FROM popular_items)"
        ).fetchone()
    assert listed is not None and listed[0] > 0
    with httpx.Client(base_url=cfg.api_url, timeout=10) as client:
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok", health.text
        for visitor in [*visitors[:: max(1, len(visitors) // 200)], 10**12]:
            answer = client.get(f"/recommendations/{visitor}", params={"k": 10})
            assert answer.status_code == 200, (visitor, answer.text)
            items = answer.json()["items"]
            # k items, fewer only when the lists run out (a tiny sample's popular list is short) or what the
            # visitor bought or has on screen is left out of them.
            own = set(csv.loc[csv["visitorid"] == visitor, "itemid"])
            assert min(10, listed[0]) - len(own) <= len(items) <= 10, (visitor, items)
            if visitor == 10**12:
                assert len(items) == min(10, listed[0])
    status = {s.name: s for s in Stack(cfg).status()}
    assert all(s.ok for s in status.values()), status
    assert status["prometheus"].state == "healthy" and status["alertmanager"].state == "healthy"
    assert status["alertmanager"].detail == "routing: off (SLACK_WEBHOOK_URL unset)"
    # Dagster holds no failed run: every gate decision was a successful run.
    query = "{ runsOrError(filter: {statuses: [FAILURE]}) { ... on Runs { results { runId jobName } } } }"
    body = httpx.post(f"{cfg.dagster_url}/graphql", json={"query": query}, timeout=30).json()
    assert body["data"]["runsOrError"]["results"] == []
    body = httpx.post(
        f"{cfg.dagster_url}/graphql",
        json={
            "query": '{ runsOrError(filter: {pipelineName: "train_recommender"}) '
            "{ ... on Runs { results { status } } } }"
        },
        timeout=30,
    ).json()
    assert [r["status"] for r in body["data"]["runsOrError"]["results"]] == ["SUCCESS"] * len(demo["results"])
