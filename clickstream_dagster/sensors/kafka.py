"""The Kafka sensor: new offsets in the topic become ingestion runs that carry offset ranges, never payloads."""

from __future__ import annotations

import dagster as dg
from kafka.errors import KafkaError

from clickstream_dagster.pipeline.offsets import dump_cursor, parse_cursor, plan_runs, run_key
from clickstream_dagster.resources.kafka import KafkaResource, KafkaUnavailable

INGEST_JOB_NAME = "ingest_events"
SENSOR_NAME = "kafka_offsets"
ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


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
) -> dg.SensorDefinition:
    """A sensor that turns each tick's backlog into at most `max_runs_per_tick` runs of bounded size.

    Runs already in flight count against `max_active_runs`, so a slow pipeline makes the sensor wait rather
    than pile up runs; far behind, it catches up with full-size runs. The daemon ticks at most every 5 s.

    Live (the backlog fits in one run), a third run in flight keeps fresh events from waiting for a busy slot
    (bench (b): p95 23.6 -> 18.4 s). Catching up (more than one run's worth), three runs in flight also keep
    the 2 cores busy while a finished run's slot waits for the next tick (bench (a), eighth round); when runs
    waited on one another for the ingest lock (the fourth round), two did better (340.8 s with 3 vs 307.4 s
    with 2), so `max_active_runs_catching_up` stays a separate setting.
    """

    @dg.sensor(
        name=SENSOR_NAME,
        job_name=job_name,
        minimum_interval_seconds=max(1, interval_seconds - TICK_DURATION_ALLOWANCE_S),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="New offsets in the event topic -> ingest_events runs over exact offset ranges",
    )
    def kafka_offsets(
        context: dg.SensorEvaluationContext, kafka: KafkaResource
    ) -> dg.SensorResult | dg.SkipReason:
        try:
            ends = kafka.end_offsets(timeout_ms=broker_timeout_ms)
        except (KafkaUnavailable, KafkaError, OSError) as exc:
            return dg.SkipReason(f"Kafka not reachable at {kafka.bootstrap_servers}: {exc}")
        if not ends:
            return dg.SkipReason(f"topic `{kafka.topic}` does not exist yet (no producer has written to it)")
        cursor = parse_cursor(context.cursor)
        backlog = sum(max(0, end - cursor.get(p, 0)) for p, end in ends.items())
        if backlog == 0:
            return dg.SkipReason(f"no new messages in `{kafka.topic}` (end offsets {ends})")
        catching_up = backlog > max_events_per_run
        limit = min(max_active_runs, max_active_runs_catching_up) if catching_up else max_active_runs
        active = context.instance.get_runs_count(dg.RunsFilter(job_name=job_name, statuses=ACTIVE_STATUSES))
        slots = limit - active
        if slots <= 0:
            return dg.SkipReason(
                f"{active} ingestion runs still in progress (at most {limit} while {backlog:,} messages are "
                f"waiting); waiting before launching more"
            )
        runs, new_cursor = plan_runs(cursor, ends, max_events_per_run, min(max_runs_per_tick, slots))
        requests = [
            dg.RunRequest(
                run_key=run_key(kafka.topic, ranges),
                run_config={
                    "ops": {
                        "raw_events": {
                            "config": {
                                "topic": kafka.topic,
                                "ranges": [
                                    {"partition": r.partition, "start": r.start, "end": r.end} for r in ranges
                                ],
                            }
                        }
                    }
                },
                tags={
                    "clickstream/events": str(sum(r.size for r in ranges)),
                    "clickstream/topic": kafka.topic,
                },
            )
            for ranges in runs
        ]
        return dg.SensorResult(run_requests=requests, cursor=dump_cursor(new_cursor))

    return kafka_offsets
