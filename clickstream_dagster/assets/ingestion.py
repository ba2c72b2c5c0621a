"""Ingestion: exact Kafka offset ranges into `clickstream_events`, and the live slice for the dashboard. The
work is the library's `clickstream_dagster.ingestion`; here are its config, its checks and what Dagster knows
of it: the runs in flight, by their tags."""

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, fields

import dagster as dg
import psycopg
from psycopg.rows import class_row
from pydantic import Field

from clickstream_dagster.events import MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS
from clickstream_dagster.ingestion.ledger import LedgerState, ledger_state
from clickstream_dagster.ingestion.quarantine_replay import ReplayFilter, replay_quarantine
from clickstream_dagster.ingestion.ranges import OffsetRange, from_tag
from clickstream_dagster.ingestion.reader import DEFAULT_BATCH_SIZE, lag_after
from clickstream_dagster.ingestion.run import ingest_ranges
from clickstream_dagster.resources import KafkaResource, PostgresResource
from clickstream_dagster.sql import queries as q
from clickstream_dagster.sql import row_rules as rules
from clickstream_dagster.sql.row_rules import ROW_RULES

RAW_EVENTS = dg.AssetKey("raw_events")
LIVE_EVENTS = dg.AssetKey("live_clickstream_events")
GROUP = "ingestion"

INGEST_JOB_NAME = "ingest_events"
REPLAY_JOB_NAME = "replay_quarantine"
# An ingest run's tags: its topic, and its ranges in their tag form (`ingestion.ranges.to_tag`).
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


def in_flight_ranges(
    instance: dg.DagsterInstance,
    topic: str,
    grace_s: float = DEFAULT_GRACE_S,
    exclude_run_id: str | None = None,
) -> list[OffsetRange]:
    """The ranges of ingestion runs that are active, or failed less than `grace_s` ago (a retry is coming).

    Runs are filtered by status (and time) in Dagster's storage and by topic here: a tag filter joins
    Dagster's run_tags table, whose every row of this tag matches, and its cost grows with the run history."""
    runs = list(instance.get_runs(filters=dg.RunsFilter(job_name=INGEST_JOB_NAME, statuses=ACTIVE_STATUSES)))
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=grace_s)
    runs += instance.get_runs(
        filters=dg.RunsFilter(
            job_name=INGEST_JOB_NAME, statuses=[dg.DagsterRunStatus.FAILURE], updated_after=since
        )
    )
    return [
        r
        for run in runs
        if run.run_id != exclude_run_id and run.tags.get(TOPIC_TAG) == topic
        for r in from_tag(run.tags.get(RANGES_TAG, ""))
    ]


def ledger_against_runs(
    conn: psycopg.Connection,
    instance: dg.DagsterInstance,
    topic: str,
    grace_s: float = DEFAULT_GRACE_S,
    exclude_run_id: str | None = None,
) -> LedgerState:
    """The ledger's gaps and overlaps (`ingestion.ledger`), less what the runs in flight are working on."""
    return ledger_state(conn, topic, in_flight_ranges(instance, topic, grace_s, exclude_run_id))


class OffsetRangeConfig(dg.Config):
    partition: int
    start: int = Field(description="First offset, inclusive")
    end: int = Field(description="Last offset, exclusive")

    @classmethod
    def of(cls, r: OffsetRange) -> "OffsetRangeConfig":
        return cls(**r.as_dict())

    def to_range(self) -> OffsetRange:
        return OffsetRange.from_dict(self.model_dump())


class QuarantineReplayConfig(dg.Config):
    """Which repaired quarantine rows to replay (`ingestion.quarantine_replay`); empty fields match every row."""

    reason_kind: str = Field(default="", description="Only rows whose reason starts with this kind")
    topic: str = ""
    partition: int = Field(default=-1, description="Only this partition (-1: all)")
    ids: list[int] = Field(default_factory=list, description="Only these quarantine ids")

    def to_filter(self) -> ReplayFilter:
        return ReplayFilter(
            reason_kind=self.reason_kind or None,
            topic=self.topic or None,
            partition=self.partition if self.partition >= 0 else None,
            ids=tuple(self.ids),
        )


class RawEventsConfig(dg.Config):
    """Which messages to ingest. The Kafka sensor fills in offset ranges; the replay_quarantine job fills in
    `replay_quarantine` instead. Neither ingests nothing."""

    topic: str = ""
    ranges: list[OffsetRangeConfig] = Field(default_factory=list)
    replay_quarantine: QuarantineReplayConfig | None = Field(
        default=None, description="Replay repaired quarantine rows (exactly once) instead of reading Kafka"
    )
    batch_size: int = Field(
        default=DEFAULT_BATCH_SIZE,
        description=(
            "Messages per loading transaction; the next batch is decoded while one loads. A steady "
            "stream's runs are far smaller than this"
        ),
    )

    @classmethod
    def for_ranges(cls, topic: str, ranges: list[OffsetRange]) -> "RawEventsConfig":
        return cls(topic=topic, ranges=[OffsetRangeConfig.of(r) for r in ranges])


@dg.asset(
    key=RAW_EVENTS,
    group_name=GROUP,
    kinds={"kafka", "postgres"},
    description=(
        "Every valid event from the Kafka topic, one row per message in `clickstream_events`, keyed by its "
        "source coordinates (topic, partition, offset). Reads exactly the offset ranges in the run config; "
        "invalid messages go to `quarantine` with the reason. Re-running a range never duplicates."
    ),
)
def raw_events(
    context: dg.AssetExecutionContext,
    config: RawEventsConfig,
    kafka: KafkaResource,
    postgres: PostgresResource,
) -> dg.MaterializeResult:
    if config.replay_quarantine is not None:
        return _replay(context, config.replay_quarantine, postgres)
    client = kafka.get_client()
    topic = config.topic or client.topic
    ranges = [r.to_range() for r in config.ranges]
    context.log.info(f"ingesting {sum(r.size for r in ranges):,} messages of {topic}: {ranges}")
    with client.bulk_consumer() as consumer, postgres.connection() as conn:
        result = ingest_ranges(
            consumer, conn, topic, ranges, context.run.run_id, batch_size=config.batch_size
        )
        total = conn.execute(q.COUNT_EVENTS).fetchone()
        lag = lag_after(consumer, topic, ranges)
    context.log.info(
        f"read {result.messages:,} = inserted {result.inserted:,} + quarantined {result.quarantined:,}"
        f" + already loaded {result.messages - result.inserted - result.quarantined:,}"
    )
    if result.refused:
        context.log.warning(
            f"refused {result.refused:,} messages loaded once already whose months retention dropped since:"
            " loading them again would count them twice; the ledger still proves them"
        )
    return dg.MaterializeResult(
        metadata={
            "messages_read": result.messages,
            "rows_inserted": result.inserted,
            "rows_quarantined": result.quarantined,
            "already_loaded": result.messages - result.inserted - result.quarantined,
            "refused_before_retention": result.refused,
            "quarantine_reasons": dict(result.reasons),
            "offset_ranges": dg.MetadataValue.json(
                {
                    "topic": topic,
                    "ranges": [r.as_dict() for r in ranges],
                }
            ),
            "consumer_lag_after_run": lag,
            "dagster/row_count": total[0] if total else 0,
        }
    )


def _replay(
    context: dg.AssetExecutionContext, replay: QuarantineReplayConfig, postgres: PostgresResource
) -> dg.MaterializeResult:
    which = replay.to_filter()
    context.log.info(f"replaying repaired quarantine rows matching {which}")
    with postgres.connection() as conn:
        result = replay_quarantine(conn, which, context.run.run_id)
        total = conn.execute(q.COUNT_EVENTS).fetchone()
    context.log.info(
        f"replayed {result.replayed:,} repaired rows ({result.already_stored:,} already stored, "
        f"{result.still_invalid:,} still invalid)"
    )
    return dg.MaterializeResult(
        metadata={
            "rows_replayed": result.replayed,
            "already_stored": result.already_stored,
            "repairs_still_invalid": result.still_invalid,
            "invalid_repair_reasons": dict(result.invalid_reasons),
            "dagster/row_count": total[0] if total else 0,
        }
    )


class LiveEventsConfig(dg.Config):
    horizon_seconds: int = Field(default=900, description="Keep events ingested within this many seconds")
    max_rows: int = Field(
        default=50_000,
        description="Never keep more than this many rows (a catching-up run copies at most this many)",
    )


@dg.asset(
    key=LIVE_EVENTS,
    deps=[RAW_EVENTS],
    group_name=GROUP,
    kinds={"postgres"},
    description="The most recently ingested events (a moving horizon of ingestion time), for the live dashboard.",
)
def live_clickstream_events(
    context: dg.AssetExecutionContext, config: LiveEventsConfig, postgres: PostgresResource
) -> dg.MaterializeResult:
    params = {"horizon": config.horizon_seconds, "max_rows": config.max_rows, "run_id": context.run.run_id}
    with postgres.connection() as conn:
        # From this run's ranges when it ingested some; materialized on its own, from the newest rows.
        in_run = conn.execute(q.RANGES_OF_RUN, (context.run.run_id,)).fetchone() is not None
        added = conn.execute(
            q.REFRESH_LIVE_EVENTS_FROM_RUN if in_run else q.REFRESH_LIVE_EVENTS, params
        ).rowcount
        pruned = conn.execute(q.PRUNE_LIVE_EVENTS, (config.horizon_seconds,)).rowcount
        pruned += conn.execute(q.CAP_LIVE_EVENTS, (config.max_rows,)).rowcount
        row = conn.execute(q.COUNT_LIVE_EVENTS).fetchone()
    count, first, last = row if row else (0, None, None)
    context.log.info(f"live table: +{added:,} -{pruned:,} = {count:,} rows")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": count,
            "rows_added": added,
            "rows_pruned": pruned,
            "horizon_seconds": config.horizon_seconds,
            "event_time_span": f"{first} .. {last}",
        }
    )


# ---- checks: the prototype's data-validation DAG ------------------------------------------------------------
# One step evaluates every rule in one pass over the rows (queries.CHECK_RUN_RANGES): six separate steps cost
# about a second more per run, and each run is on the path from produce to windowed_stats.
# Each check covers the ranges this run ingested; executed on its own (no ranges in this run) it covers the table.

CHECK_SPECS = [
    *(
        dg.AssetCheckSpec(rule.name, asset=RAW_EVENTS, blocking=True, description=rule.checks)
        for rule in ROW_RULES
    ),
    dg.AssetCheckSpec(
        "offsets_reconcile",
        asset=RAW_EVENTS,
        blocking=True,
        description=(
            "per ingested offset range: messages read = rows stored + rows quarantined (+ rows retention dropped"
            " with their month), and messages read + "
            "offsets without a message (transaction markers, aborted, compacted) + offsets lost = end - start"
        ),
    ),
    dg.AssetCheckSpec(
        "no_offsets_lost",
        asset=RAW_EVENTS,
        blocking=True,
        description="no offset was deleted from the topic (retention, DeleteRecords) before it was read",
    ),
    dg.AssetCheckSpec(
        "ledger_contiguous",
        asset=RAW_EVENTS,
        blocking=True,
        description=(
            "per partition, the ledger covers every offset the sensor requested, from where ingestion started "
            "up to its cursor, with no gap and no overlap (ranges still being ingested or retried excepted)"
        ),
    ),
]


@dg.multi_asset_check(specs=CHECK_SPECS, description="Validate the rows raw_events loaded in this run")
def validate_raw_events(
    context: dg.AssetCheckExecutionContext, postgres: PostgresResource
) -> Iterator[dg.AssetCheckResult]:
    params = {"run_id": context.run.run_id, "min_ts": MIN_TIMESTAMP_MS, "max_ts": MAX_TIMESTAMP_MS}
    with postgres.connection() as conn, conn.cursor(row_factory=class_row(RangeCheck)) as cur:
        ranges = cur.execute(rules.CHECK_RUN_RANGES, params).fetchall()
        if ranges:
            scope = "this run's ranges"
            violations = [sum(r.violations[i] for r in ranges) for i in range(len(ROW_RULES))]
        else:
            scope = "the whole table"
            ranges = cur.execute(rules.CHECK_ALL_RANGES).fetchall()
            row = conn.execute(rules.CHECK_ALL_ROWS, params).fetchone()
            violations = list(row[0]) if row else [0] * len(ROW_RULES)
        topics = sorted({r.topic for r in ranges} | {t for (t,) in conn.execute(q.PLANNED_TOPICS)})
        ledgers = {
            t: ledger_against_runs(conn, context.instance, t, exclude_run_id=context.run.run_id)
            for t in topics
        }
    for rule, bad in zip(ROW_RULES, violations, strict=True):
        yield _count_result(rule.name, int(bad), rule.violating, scope)
    yield _reconciliation_result(ranges)
    yield _lost_result(ranges, scope)
    yield _contiguity_result(ledgers)


@dataclass(frozen=True)
class RangeCheck:
    """One offset range of the ledger (row_rules.CHECK_RUN_RANGES / CHECK_ALL_RANGES): what it read and
    how every offset is accounted for, the rows it holds and (in a run's checks) their violations of each rule
    (`violations`, in ROW_RULES' order)."""

    topic: str
    partition: int
    start: int
    end: int
    read: int
    control: int
    aborted: int
    compacted: int
    lost: int
    dropped: int  # stored once, then dropped with their month by retention (migration 0017)
    stored: int
    quarantined: int  # still in the quarantine (not replayed)
    replayed: int  # repaired and replayed: counted in `stored` now, traced in the quarantine
    violations: tuple[int, ...] = ()

    @property
    def reconciles(self) -> bool:
        offsets = self.read + self.control + self.aborted + self.compacted + self.lost
        return self.stored + self.dropped + self.quarantined == self.read and offsets == self.end - self.start

    def as_json(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in _RANGE_FIELDS}


_RANGE_FIELDS = [f.name for f in fields(RangeCheck) if f.name != "violations"]


def _count_result(name: str, bad: int, what: str, scope: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name,
        passed=bad == 0,
        metadata={"violations": bad, "scope": scope},
        description=f"{bad:,} rows {what}" if bad else None,
    )


def _reconciliation_result(ranges: list[RangeCheck]) -> dg.AssetCheckResult:
    mismatched = [r.as_json() for r in ranges if not r.reconciles]
    return dg.AssetCheckResult(
        check_name="offsets_reconcile",
        passed=not mismatched,
        metadata={
            "ranges_checked": len(ranges),
            "offsets": sum(r.end - r.start for r in ranges),
            "read": sum(r.read for r in ranges),
            "stored": sum(r.stored for r in ranges),
            "dropped_by_retention": sum(r.dropped for r in ranges),
            "quarantined": sum(r.quarantined for r in ranges),
            "replayed_from_quarantine": sum(r.replayed for r in ranges),
            "skipped_control": sum(r.control for r in ranges),
            "skipped_aborted": sum(r.aborted for r in ranges),
            "skipped_compacted": sum(r.compacted for r in ranges),
            "lost_retention": sum(r.lost for r in ranges),
            "mismatched_ranges": dg.MetadataValue.json(mismatched[:20]),
        },
        description=f"{len(mismatched)} ranges do not reconcile" if mismatched else None,
    )


def _lost_result(ranges: list[RangeCheck], scope: str) -> dg.AssetCheckResult:
    lost = [r.as_json() for r in ranges if r.lost]
    total = sum(r.lost for r in ranges)
    return dg.AssetCheckResult(
        check_name="no_offsets_lost",
        passed=total == 0,
        metadata={
            "lost_offsets": total,
            "scope": scope,
            "ranges_with_losses": dg.MetadataValue.json(lost[:20]),
        },
        description=(
            f"{total:,} offsets were deleted from the topic before they were read (retention or DeleteRecords): "
            "raise the topic's retention.ms or catch up faster"
            if total
            else None
        ),
    )


def _contiguity_result(ledgers: dict[str, LedgerState]) -> dg.AssetCheckResult:
    def spans(kind: str) -> list[dict[str, object]]:
        return [{"topic": t, **r.as_dict()} for t, state in ledgers.items() for r in getattr(state, kind)]

    gaps, overlaps = spans("gaps"), spans("overlaps")
    problems = [f"gap {g['topic']}/{g['partition']} [{g['start']}, {g['end']})" for g in gaps] + [
        f"overlap {o['topic']}/{o['partition']} [{o['start']}, {o['end']})" for o in overlaps
    ]
    return dg.AssetCheckResult(
        check_name="ledger_contiguous",
        passed=not problems,
        metadata={
            "topics": len(ledgers),
            "gap_offsets": sum(int(g["end"]) - int(g["start"]) for g in gaps),  # type: ignore[call-overload]
            "gaps": dg.MetadataValue.json(gaps[:20]),
            "overlaps": dg.MetadataValue.json(overlaps[:20]),
            "ranges_in_flight": sum(len(s.in_flight) for s in ledgers.values()),
        },
        description="; ".join(problems[:5]) + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else "")
        if problems
        else None,
    )


raw_events_checks = [validate_raw_events]
