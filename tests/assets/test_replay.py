"""Quarantine replay: repaired rows are re-ingested exactly once, under their original source coordinates,
counted in the reconciliation and reflected in windowed_stats and event_statistics (checked against SQL)."""

from __future__ import annotations

from typing import Any

import dagster as dg
import psycopg
import pytest

from clickstream_dagster.assets.analytics import event_statistics, windowed_stats
from clickstream_dagster.assets.ingestion import raw_events, raw_events_checks
from clickstream_dagster.clients.kafka import KafkaClient
from clickstream_dagster.messages import encode_value
from clickstream_dagster.resources import PostgresResource
from tests.assets.conftest import produce, random_events
from tests.assets.test_analytics import _assert_matches_independent_sql

TS = 1_433_000_123_000
NEGATIVE = b'{"v":1,"timestamp":1433000123000,"visitorid":-7,"event":"view","itemid":11,"transactionid":null}'
MISSPELT = b'{"v":1,"timestamp":1433000123000,"visitorid":8,"event":"veiw","itemid":12,"transactionid":null}'
GARBAGE = b"not json at all"


@pytest.fixture
def resources(connect_resources: dict[str, Any]) -> dict[str, Any]:
    """windowed_stats on the real Spark Connect server."""
    return connect_resources


def _materialize(
    resources: dict[str, Any], instance: dg.DagsterInstance, config: dict[str, Any]
) -> dg.ExecuteInJobResult:
    return dg.materialize(
        [raw_events, *raw_events_checks, windowed_stats, event_statistics],
        resources=resources,
        instance=instance,
        run_config={"ops": {"raw_events": {"config": config}}},
    )


def _quarantine(conn: psycopg.Connection) -> dict[bytes, tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT raw_payload, id, kafka_partition, kafka_offset, replayed_at IS NOT NULL, replay_run_id, replay_error "
        "FROM quarantine ORDER BY id"
    ).fetchall()
    return {bytes(raw): tuple(rest) for raw, *rest in rows}


def test_repaired_rows_are_replayed_exactly_once(
    kafka: KafkaClient,
    postgres: PostgresResource,
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    full_ranges: Any,
) -> None:
    events = random_events(400, seed=81)
    produce(kafka, events, [(NEGATIVE, ""), (MISSPELT, ""), (GARBAGE, "")])
    assert _materialize(resources, instance, {"topic": kafka.topic, "ranges": full_ranges()}).success
    with postgres.connection() as conn:
        before = _quarantine(conn)
        assert len(before) == 3
        # Repairs by SQL: the visitor id, and a misspelt event that is still wrong; the garbage stays as it is.
        fixed = encode_value(TS, 7, "view", 11, None)
        conn.execute("UPDATE quarantine SET repaired_payload = %s WHERE raw_payload = %s", (fixed, NEGATIVE))
        still_bad = MISSPELT.replace(b"veiw", b"vew")
        conn.execute(
            "UPDATE quarantine SET repaired_payload = %s WHERE raw_payload = %s", (still_bad, MISSPELT)
        )

    replay = _materialize(resources, instance, {"replay_quarantine": {}})
    assert replay.success
    meta = replay.asset_materializations_for_node("raw_events")[0].metadata
    assert (meta["rows_replayed"].value, meta["repairs_still_invalid"].value) == (1, 1)
    checks = {e.check_name: e for e in replay.get_asset_check_evaluations()}
    assert all(c.passed for c in checks.values()), {
        n: c.description for n, c in checks.items() if not c.passed
    }
    assert checks["offsets_reconcile"].metadata["replayed_from_quarantine"].value == 1
    with postgres.connection() as conn:
        after = _quarantine(conn)
        _, partition, offset, *_ = before[NEGATIVE]
        row = conn.execute(
            'SELECT "timestamp", visitorid, event, itemid FROM clickstream_events '
            "WHERE kafka_topic = %s AND kafka_partition = %s AND kafka_offset = %s",
            (kafka.topic, partition, offset),
        ).fetchone()
        assert row == (TS, 7, "view", 11), "stored under its original source coordinates"
        assert conn.execute("SELECT count(*) FROM clickstream_events").fetchone() == (401,)
    assert after[NEGATIVE][3:5] == (True, replay.run_id), "traced: when and by which run"
    assert after[MISSPELT][3] is False and str(after[MISSPELT][5]).startswith("unknown event: ")
    assert after[GARBAGE][3] is False and after[GARBAGE][5] is None
    _assert_matches_independent_sql(postgres)

    # Replaying again adds nothing; a new repair of the still-invalid row clears its error and lands once.
    again = _materialize(resources, instance, {"replay_quarantine": {}})
    assert again.asset_materializations_for_node("raw_events")[0].metadata["rows_replayed"].value == 0
    with postgres.connection() as conn:
        good = MISSPELT.replace(b"veiw", b"view")
        conn.execute("UPDATE quarantine SET repaired_payload = %s WHERE raw_payload = %s", (good, MISSPELT))
        assert _quarantine(conn)[MISSPELT][5] is None, "a new repair clears the last error"
    only = _materialize(resources, instance, {"replay_quarantine": {"reason_kind": "negative id"}})
    assert only.asset_materializations_for_node("raw_events")[0].metadata["rows_replayed"].value == 0, (
        "filters: the misspelt row's kind is `unknown event`"
    )
    last = _materialize(resources, instance, {"replay_quarantine": {"reason_kind": "unknown event"}})
    assert last.asset_materializations_for_node("raw_events")[0].metadata["rows_replayed"].value == 1
    for _ in range(2):
        _materialize(resources, instance, {"replay_quarantine": {}})
    with postgres.connection() as conn:
        assert conn.execute("SELECT count(*) FROM clickstream_events").fetchone() == (402,)
        quarantined = conn.execute("SELECT count(*) FROM quarantine WHERE replayed_at IS NULL").fetchone()
        assert quarantined == (1,), "only the garbage is still quarantined"
    checks = {e.check_name: e for e in last.get_asset_check_evaluations()}
    assert all(c.passed for c in checks.values())
    _assert_matches_independent_sql(postgres)
