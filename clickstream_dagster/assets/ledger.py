"""The ledger against the plan: which offsets the Kafka sensor requested that no recorded range covers.

The sensor records in `ingestion_plan` how far it has planned each partition; `ingested_ranges` records what
was read. A gap is a planned offset range that is not in the ledger and that no run is still working on:
neither an active ingestion run nor one that failed within the last `grace_s` seconds (Dagster's run retries
pick those up). The contiguity check fails on gaps and overlaps; the sensor requests gaps again.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import dagster as dg
import psycopg
from psycopg.rows import class_row

from clickstream_dagster.pipeline.ingest import OffsetRange
from clickstream_dagster.pipeline.offsets import parse_ranges, subtract
from clickstream_dagster.sql import queries as q

INGEST_JOB_NAME = "ingest_events"
RANGES_TAG = "clickstream/ranges"
TOPIC_TAG = "clickstream/topic"
ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
# A failed run is retried by the run-retry daemon within seconds; until this much later its ranges are not a gap.
DEFAULT_GRACE_S = 60.0


@dataclass(frozen=True)
class LedgerSpan:
    """A row of queries.LEDGER_GAPS."""

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


def in_flight_ranges(
    instance: dg.DagsterInstance,
    topic: str,
    grace_s: float = DEFAULT_GRACE_S,
    exclude_run_id: str | None = None,
) -> list[OffsetRange]:
    """The ranges of ingestion runs that are active, or failed less than `grace_s` ago (a retry is coming)."""
    runs = list(
        instance.get_runs(
            filters=dg.RunsFilter(job_name=INGEST_JOB_NAME, statuses=ACTIVE_STATUSES, tags={TOPIC_TAG: topic})
        )
    )
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=grace_s)
    runs += instance.get_runs(
        filters=dg.RunsFilter(
            job_name=INGEST_JOB_NAME,
            statuses=[dg.DagsterRunStatus.FAILURE],
            tags={TOPIC_TAG: topic},
            updated_after=since,
        )
    )
    return [
        r for run in runs if run.run_id != exclude_run_id for r in parse_ranges(run.tags.get(RANGES_TAG, ""))
    ]


def ledger_state(
    conn: psycopg.Connection,
    instance: dg.DagsterInstance,
    topic: str,
    grace_s: float = DEFAULT_GRACE_S,
    exclude_run_id: str | None = None,
) -> LedgerState:
    with conn.cursor(row_factory=class_row(LedgerSpan)) as cur:
        spans = cur.execute(q.LEDGER_GAPS, {"topic": topic}).fetchall()
    in_flight = in_flight_ranges(instance, topic, grace_s, exclude_run_id)
    gaps = subtract([s.range for s in spans if s.kind == "gap"], in_flight)
    overlaps = [s.range for s in spans if s.kind == "overlap"]
    return LedgerState(gaps=gaps, overlaps=overlaps, in_flight=in_flight)
