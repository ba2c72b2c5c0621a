"""The Kafka sensor: new offsets in the topic become ingestion runs that carry offset ranges, never payloads."""

from __future__ import annotations

import dagster as dg
import psycopg
from kafka.errors import KafkaError

from clickstream_dagster.assets.ingestion import (
    ACTIVE_STATUSES,
    DEFAULT_GRACE_S,
    INGEST_JOB_NAME,
    RANGES_TAG,
    RAW_EVENTS,
    TOPIC_TAG,
    RawEventsConfig,
    ledger_against_runs,
)
from clickstream_dagster.clients.kafka import KafkaUnavailable
from clickstream_dagster.ingestion.ledger import compact_ledger
from clickstream_dagster.ingestion.planner import dump_cursor, parse_cursor, plan_runs
from clickstream_dagster.ingestion.ranges import OffsetRange, from_tag, run_key, to_tag
from clickstream_dagster.resources.kafka import KafkaResource
from clickstream_dagster.resources.postgres import PostgresResource
from clickstream_dagster.sql import queries as q

SENSOR_NAME = "kafka_offsets"
# How many of the newest ingestion runs the sensor looks at to skip ranges already requested (a tick launches
# at most a few runs; far more than a crash between launching runs and storing the cursor can leave behind).
RECENT_RUNS = 100


# The daemon evaluates sensors in a loop every 5 s and skips a sensor whose last tick *ended* less than its
# minimum interval ago. A tick that launches runs ends a second or so after its loop began, so a minimum of
# exactly 5 s skipped the next loop after every such tick: runs were launched 10 s apart just when a backlog
# was waiting (bench (a)'s run timeline). The minimum is set this much below the interval, so the sensor ticks
# on the first loop at or after `interval_seconds` (every loop, for the default 5 s).
TICK_DURATION_ALLOWANCE_S = 2


def build_kafka_sensor(
    job_name: str = INGEST_JOB_NAME,
    max_events_per_run: int = 500_000,
    max_runs_per_tick: int = 4,
    max_active_runs: int = 3,
    max_active_runs_catching_up: int = 3,
    interval_seconds: int = 5,
    broker_timeout_ms: int = 3_000,
    repair_grace_s: float = DEFAULT_GRACE_S,
    max_repair_attempts: int = 5,
    repair_backoff_s: float = 30.0,
    max_repairs_per_tick: int = 2,
) -> dg.SensorDefinition:
    """A sensor that turns each tick's backlog into at most `max_runs_per_tick` runs of bounded size.

    Runs already in flight count against `max_active_runs`, so a slow pipeline makes the sensor wait rather
    than pile up runs; far behind, it catches up with full-size runs. The daemon ticks at most every 5 s.

    Live (the backlog fits in one run), a third run in flight keeps fresh events from waiting for a busy slot
    (bench (b): p95 23.6 -> 18.4 s). Catching up (more than one run's worth), three runs in flight also keep
    the 2 cores busy while a finished run's slot waits for the next tick (bench/HISTORY.md, pipeline (a), eighth round); when runs
    waited on one another for the ingest lock (the fourth round), two did better (340.8 s with 3 vs 307.4 s
    with 2), so `max_active_runs_catching_up` stays a separate setting.

    Ranges end at the last stable offset, never inside an open transaction. Every tick records in PostgreSQL
    how far the previous tick planned (its runs exist by now), so the contiguity check can prove the ledger
    against it, and requests again each gap a run left behind for good (self-healing): one run per gap, with
    a deterministic run key per attempt, at most `max_repair_attempts` attempts, `repair_backoff_s` doubling
    between them. Repairs never hold back new work: they come on top of the runs planned for new offsets.
    """

    @dg.sensor(
        name=SENSOR_NAME,
        job_name=job_name,
        minimum_interval_seconds=max(1, interval_seconds - TICK_DURATION_ALLOWANCE_S),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="New offsets in the event topic -> ingest_events runs over exact offset ranges",
    )
    def kafka_offsets(
        context: dg.SensorEvaluationContext, kafka: KafkaResource, postgres: PostgresResource
    ) -> dg.SensorResult | dg.SkipReason:
        client = kafka.get_client()
        try:
            ends = client.end_offsets(timeout_ms=broker_timeout_ms)
            cursor = parse_cursor(context.cursor)
            # A partition new to the cursor starts where its log starts (retention may have moved it).
            if any(p not in cursor for p in ends):
                starts = client.log_start_offsets()
                cursor = {**{p: starts.get(p, 0) for p in ends if p not in cursor}, **cursor}
        except (KafkaUnavailable, KafkaError, OSError) as exc:
            return dg.SkipReason(f"Kafka not reachable at {client.bootstrap_servers}: {exc}")
        if not ends:
            return dg.SkipReason(f"topic `{client.topic}` does not exist yet (no producer has written to it)")
        # Runs this sensor already requested from the cursor on (the daemon died after launching them, before
        # it stored the cursor) are not planned again: their ranges would overlap what the next plan covers.
        cursor = _past_requested(context.instance, client.topic, cursor)
        with postgres.connection() as conn:
            # The ledger's settled stretch into its checkpoint first (its own short transaction): the proof
            # below, like every query of the ledger, then reads only what was recorded since.
            compact_ledger(conn, client.topic)
        with postgres.connection() as conn:
            _record_plan(conn, client.topic, cursor)
            repairs = _repairs(context, conn, client.topic)
        backlog = sum(max(0, end - cursor.get(p, 0)) for p, end in ends.items())
        if backlog == 0:
            if repairs:
                return dg.SensorResult(run_requests=repairs, cursor=dump_cursor(cursor))
            return dg.SkipReason(f"no new messages in `{client.topic}` (last stable offsets {ends})")
        catching_up = backlog > max_events_per_run
        limit = min(max_active_runs, max_active_runs_catching_up) if catching_up else max_active_runs
        active = context.instance.get_runs_count(dg.RunsFilter(job_name=job_name, statuses=ACTIVE_STATUSES))
        slots = limit - active
        if slots <= 0:
            if repairs:
                return dg.SensorResult(run_requests=repairs, cursor=dump_cursor(cursor))
            return dg.SkipReason(
                f"{active} ingestion runs still in progress (at most {limit} while {backlog:,} messages are "
                f"waiting); waiting before launching more"
            )
        runs, new_cursor = plan_runs(cursor, ends, max_events_per_run, min(max_runs_per_tick, slots))
        requests = [
            dg.RunRequest(
                run_key=run_key(client.topic, ranges),
                run_config=ingest_run_config(client.topic, ranges),
                tags=ingest_run_tags(client.topic, ranges),
            )
            for ranges in runs
        ]
        return dg.SensorResult(run_requests=repairs + requests, cursor=dump_cursor(new_cursor))

    def _repairs(
        context: dg.SensorEvaluationContext, conn: psycopg.Connection, topic: str
    ) -> list[dg.RunRequest]:
        """Runs for the gaps that failed runs left in the ledger, within the attempts and their backoff."""
        gaps = ledger_against_runs(conn, context.instance, topic, repair_grace_s).gaps
        if not gaps:
            return []
        attempts = {
            (p, s, e): (n, elapsed)
            for p, s, e, n, elapsed in conn.execute(q.REPAIR_ATTEMPTS, (topic,)).fetchall()
        }
        out: list[dg.RunRequest] = []
        for gap in gaps:
            if len(out) >= max_repairs_per_tick:
                break
            done, elapsed = attempts.get((gap.partition, gap.start, gap.end), (0, None))
            if done >= max_repair_attempts:
                context.log.warning(f"gap {gap} of {topic}: {done} repair attempts failed; giving up")
                continue
            if elapsed is not None and elapsed < repair_backoff_s * 2 ** (done - 1):
                continue
            attempt = done + 1
            key = f"repair/{run_key(topic, [gap])}/{attempt}"
            conn.execute(
                q.RECORD_REPAIR_ATTEMPT,
                {
                    "topic": topic,
                    **gap.as_dict(),
                    "attempt": attempt,
                    "run_key": key,
                },
            )
            context.log.info(
                f"requesting gap {gap} of {topic} again (attempt {attempt}/{max_repair_attempts})"
            )
            out.append(
                dg.RunRequest(
                    run_key=key,
                    run_config=ingest_run_config(topic, [gap]),
                    # The sensor's attempts, with their backoff, are the only retries of a repair.
                    tags={
                        **ingest_run_tags(topic, [gap]),
                        "dagster/max_retries": "0",
                        "clickstream/repair": str(attempt),
                    },
                )
            )
        return out

    return kafka_offsets


def ingest_run_config(topic: str, ranges: list[OffsetRange]) -> dg.RunConfig:
    """The run config of an ingest_events run over `ranges` (offsets only, never payloads)."""
    return dg.RunConfig(ops={RAW_EVENTS.path[-1]: RawEventsConfig.for_ranges(topic, ranges)})


def ingest_run_tags(topic: str, ranges: list[OffsetRange]) -> dict[str, str]:
    """The tags of such a run: its topic and ranges (what the ledger's contiguity check knows in flight)."""
    return {
        "clickstream/events": str(sum(r.size for r in ranges)),
        TOPIC_TAG: topic,
        RANGES_TAG: to_tag(ranges),
    }


def _record_plan(conn: psycopg.Connection, topic: str, cursor: dict[int, int]) -> None:
    """How far runs have been requested for each partition (the cursor before this tick's runs), and where
    each partition starts; a partition new this tick is recorded as planned up to its start."""
    parts = sorted(cursor)
    conn.execute(
        q.RECORD_PLAN,
        {
            "topic": topic,
            "partitions": parts,
            "offsets": [cursor[p] for p in parts],
        },
    )


def _past_requested(instance: dg.DagsterInstance, topic: str, cursor: dict[int, int]) -> dict[int, int]:
    """The cursor moved past the ranges of runs that already exist and start where it points (newest runs)."""
    # The newest runs of the job, by topic here: a tag filter in the query joins Dagster's run_tags table and
    # costs what the whole run history does (bench history).
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=INGEST_JOB_NAME), limit=RECENT_RUNS)
    ends: dict[int, dict[int, int]] = {}
    for run in (r for r in runs if r.tags.get(TOPIC_TAG) == topic):
        for r in from_tag(run.tags.get(RANGES_TAG, "")):
            by_start = ends.setdefault(r.partition, {})
            by_start[r.start] = max(by_start.get(r.start, r.end), r.end)
    return {p: _follow(ends.get(p, {}), position) for p, position in cursor.items()}


def _follow(ends_by_start: dict[int, int], position: int) -> int:
    """From `position`, through ranges that start where the previous one ended, to the last one's end."""
    while (end := ends_by_start.get(position)) is not None and end > position:
        position = end
    return position
