"""The ledger and its proof: which offsets have been read, and which planned ones nobody has read.

`ingested_ranges` holds one row per range read in full, every offset accounted for (`record_range`:
read + skipped + lost = end - start). `ingestion_plan` holds how far the Kafka sensor has planned each
partition, and where it started. Against the plan, the ledger is proven from Kafka's side of the ranges:

- a **gap** is a planned span that no recorded range covers. It is a gap for good only when no run is still
  working on it: the caller passes the ranges in flight (active ingest runs, and failed ones a retry is coming
  for), which `ledger_state` leaves out. The sensor requests gaps again; the contiguity check names them;
- an **overlap** is a span two recorded ranges both claim (a bug, never repaired silently).

Pure apart from the one query it runs (`LEDGER_SPANS`), so the asset checks, the sensor and the exporter share
it; in flight is the Dagster wiring's to know (`assets.ingestion.in_flight_ranges`).

**Checkpoints** (`compact_ledger`, every sensor tick): from a partition's first row, the ranges that follow
each other with no gap or overlap, each reconciled and recorded more than 15 minutes ago (`settle_seconds`: no run
is still retrying them), are merged into one row holding their sums. That row is the partition's checkpoint: up to its
end the ledger is contiguous and reconciled, from Kafka's side, and every query of the ledger (this proof, the
checks, the exporter, the dashboard) reads it and the ranges recorded since, never the whole history. A gap,
an overlap or an unreconciled range stops the merge where it is, so it stays in view until it is repaired.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg
from psycopg.rows import class_row

from clickstream_dagster.ingestion.ranges import OffsetRange, subtract
from clickstream_dagster.settings import env_number
from clickstream_dagster.sql import queries as q

if TYPE_CHECKING:
    from clickstream_dagster.ingestion.loader import LoadResult
    from clickstream_dagster.ingestion.reader import RangeRead


@dataclass(frozen=True)
class LedgerSpan:
    """A row of queries.LEDGER_SPANS: a planned span no range covers, or one two ranges claim."""

    topic: str
    partition: int
    kind: str  # 'gap' | 'overlap'
    start: int
    end: int

    @property
    def range(self) -> OffsetRange:
        return OffsetRange(self.partition, self.start, self.end)


@dataclass(frozen=True)
class LedgerState:
    gaps: list[OffsetRange]  # planned, not recorded, nobody working on them
    overlaps: list[OffsetRange]  # offsets two recorded ranges both claim
    in_flight: list[OffsetRange]


def ledger_spans(conn: psycopg.Connection, topic: str) -> list[LedgerSpan]:
    """Every gap and overlap of `topic`'s ledger against its plan, in partition and offset order."""
    with conn.cursor(row_factory=class_row(LedgerSpan)) as cur:
        return cur.execute(q.LEDGER_SPANS, {"topic": topic}).fetchall()


def ledger_state(conn: psycopg.Connection, topic: str, in_flight: Sequence[OffsetRange]) -> LedgerState:
    """The ledger's gaps (less what is `in_flight`) and overlaps."""
    spans = ledger_spans(conn, topic)
    gaps = subtract([s.range for s in spans if s.kind == "gap"], in_flight)
    overlaps = [s.range for s in spans if s.kind == "overlap"]
    return LedgerState(gaps=gaps, overlaps=overlaps, in_flight=list(in_flight))


def gap_offsets_behind(spans: Sequence[LedgerSpan], read_to: int) -> int:
    """Offsets of a partition's gaps that lie behind `read_to` (where its ledger has read up to): what the
    exporter reports as missing, whatever is in flight beyond it."""
    return sum(max(0, min(s.end, read_to) - s.start) for s in spans if s.kind == "gap")


def record_range(
    conn: psycopg.Connection, topic: str, rr: RangeRead, total: LoadResult, run_id: str | None
) -> None:
    """One range read in full into `ingested_ranges`, with what was read, stored, quarantined and skipped."""
    r = rr.range
    conn.execute(
        q.RECORD_INGESTED_RANGE,
        {
            "topic": topic,
            **r.as_dict(),
            "read": rr.read,
            "inserted": total.inserted_by_partition[r.partition],
            "quarantined": total.quarantined_by_partition[r.partition],
            "control": rr.skipped_control,
            "aborted": rr.skipped_aborted,
            "compacted": rr.skipped_compacted,
            "lost": rr.lost_retention,
            "run_id": run_id,
        },
    )


SETTLE_ENV = "CLICKSTREAM_LEDGER_SETTLE_SECONDS"
DEFAULT_SETTLE_S = 900.0


def settle_seconds(env: Mapping[str, str] | None = None) -> float:
    """How long after it was recorded a range may be merged into its checkpoint (CLICKSTREAM_LEDGER_SETTLE_SECONDS,
    default 900): well past the run retries (within a minute) that may record it again."""
    seconds = env_number(SETTLE_ENV, DEFAULT_SETTLE_S, "seconds", env)
    if seconds < 60:
        raise ValueError(
            f"{SETTLE_ENV}={seconds:g}: at least 60 s, past the run retries that re-record a range"
        )
    return seconds


@dataclass(frozen=True)
class LedgerRow:
    """A row of queries.LEDGER_HEAD."""

    start: int
    end: int
    read: int
    inserted: int
    quarantined: int
    skipped: int
    lost: int
    settled: bool  # recorded more than min_age_s ago

    @property
    def reconciled(self) -> bool:
        return self.read == self.inserted + self.quarantined and self.read + self.skipped + self.lost == (
            self.end - self.start
        )


def proven_stretch(rows: Sequence[LedgerRow]) -> list[LedgerRow]:
    """From the first row: the rows that follow each other exactly, each settled and reconciled."""
    stretch: list[LedgerRow] = []
    for row in rows:
        if not (row.settled and row.reconciled) or (stretch and row.start != stretch[-1].end):
            break
        stretch.append(row)
    return stretch


def compact_ledger(
    conn: psycopg.Connection, topic: str, min_age_s: float | None = None, max_rows: int = 10_000
) -> dict[int, int]:
    """Merge each partition's proven stretch into its checkpoint row (one transaction); returns the rows
    merged away per partition. Reads at most `max_rows` rows per partition: a long ledger (a deployment
    upgraded from before checkpoints) is merged over a few calls."""
    settle = settle_seconds() if min_age_s is None else min_age_s
    merged: dict[int, int] = {}
    with conn.transaction():
        conn.execute(q.COMPACTION_LOCK)
        partitions = [p for (p,) in conn.execute(q.PLANNED_PARTITIONS, (topic,))]
        for partition in partitions:
            params = {"topic": topic, "partition": partition, "min_age": settle, "limit": max_rows}
            with conn.cursor(row_factory=class_row(LedgerRow)) as cur:
                stretch = proven_stretch(cur.execute(q.LEDGER_HEAD, params).fetchall())
            if len(stretch) < 2:
                continue
            conn.execute(
                q.MERGE_RANGES,
                {**params, "starts": [r.start for r in stretch], "ends": [r.end for r in stretch]},
            )
            merged[partition] = len(stretch) - 1
    return merged
