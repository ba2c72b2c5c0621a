"""Replaying repaired quarantine rows into clickstream_events, exactly once, under their original coordinates.

A user repairs a quarantined message by writing its corrected value into `quarantine.repaired_payload` (by
SQL, e.g. ``UPDATE quarantine SET repaired_payload = convert_to('{"v":1,...}', 'UTF8') WHERE id = 42``).
`replay_quarantine` then loads the repaired rows that match a filter, batch by batch, each batch in one
transaction with marking its rows replayed:

- a repaired value is decoded like any message; a valid one is loaded by `loader.load_batch` with the
  original (topic, partition, offset), so the windows and per event type totals are updated like for any
  batch, and the unique source key makes a second load of the same offset impossible;
- a repair that is still invalid is not loaded: its row gets `replay_error` (a new repair clears it);
- the quarantine row stays, traced by `replayed_at` and `replay_run_id`; the reconciliation counts a
  replayed row as stored, no longer as quarantined (read = stored + quarantined still holds).

Rows are locked (FOR UPDATE SKIP LOCKED) and marked in the transaction that loads them: replaying twice, or
two replays at once, add nothing. A replay killed mid-way leaves each batch loaded and marked, or neither.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import psycopg

from clickstream_dagster.ingestion.loader import load_batch
from clickstream_dagster.ingestion.reader import Batch, parse_record
from clickstream_dagster.sql import queries as q

DEFAULT_REPLAY_BATCH = 50_000


@dataclass(frozen=True)
class ReplayFilter:
    """Which repaired rows to replay; every field left empty matches all."""

    reason_kind: str | None = None  # the part of the reason before the first ':'
    topic: str | None = None
    partition: int | None = None
    ids: tuple[int, ...] = ()

    def params(self) -> dict[str, object]:
        return {
            "reason": self.reason_kind,
            "topic": self.topic,
            "partition": self.partition,
            "ids": list(self.ids),
        }


@dataclass
class ReplayResult:
    replayed: int = 0  # repaired rows now stored
    already_stored: int = (
        0  # their offsets were in clickstream_events already (marked replayed, nothing added)
    )
    still_invalid: int = 0
    invalid_reasons: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class _Repair:
    id: int
    topic: str
    partition: int
    offset: int
    payload: bytes
    produced_ms: int


def replay_quarantine(
    conn: psycopg.Connection,
    which: ReplayFilter,
    run_id: str | None,
    batch_size: int = DEFAULT_REPLAY_BATCH,
) -> ReplayResult:
    result = ReplayResult()
    after = 0
    while True:
        with conn.transaction(), conn.cursor() as cur:
            rows = [
                _Repair(int(i), t, int(p), int(o), bytes(v), int(ms))
                for i, t, p, o, v, ms in cur.execute(
                    q.PENDING_REPAIRS, {**which.params(), "after": after, "limit": batch_size}
                ).fetchall()
            ]
            if not rows:
                return result
            after = rows[-1].id
            _replay_batch(conn, rows, run_id, result)


def _replay_batch(
    conn: psycopg.Connection, rows: list[_Repair], run_id: str | None, result: ReplayResult
) -> None:
    by_topic: dict[str, list[_Repair]] = {}
    for row in rows:
        by_topic.setdefault(row.topic, []).append(row)
    replayed: list[int] = []
    invalid: dict[int, str] = {}
    for topic, repairs in by_topic.items():
        batch = Batch(topic)
        ids = {(r.partition, r.offset): r.id for r in repairs}
        for r in sorted(repairs, key=lambda r: (r.partition, r.offset)):
            parse_record(r.partition, r.offset, r.payload, r.produced_ms, batch)
        for reject in batch.rejects:
            invalid[ids[(reject.partition, reject.offset)]] = reject.reason
        batch.rejects = []
        if batch.events:
            loaded = load_batch(conn, batch)
            result.replayed += loaded.inserted
            result.already_stored += len(batch.events) - loaded.inserted - len(loaded.held_back)
            for e in batch.events:
                held = loaded.held_back.get((e.partition, e.offset))
                if held is not None:  # its month was dropped, or it is later than the lateness horizon: stays
                    invalid[ids[(e.partition, e.offset)]] = held
                else:
                    replayed.append(ids[(e.partition, e.offset)])
    if replayed:
        conn.execute(q.MARK_REPLAYED, {"ids": replayed, "run_id": run_id})
    if invalid:
        conn.execute(q.MARK_REPLAY_FAILED, {"ids": list(invalid), "reasons": list(invalid.values())})
        result.still_invalid += len(invalid)
        result.invalid_reasons.update(reason.split(":", 1)[0] for reason in invalid.values())
