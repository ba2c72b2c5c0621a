"""The sessions sweeper: loaded events that no run is left to apply to sessions become a run of the sessions
step alone.

Every ingest run ends with the sessions step, so the queue normally empties within seconds of a load. Three
paths leave it waiting with no run to come: the last runs of a catch-up deferred the step (a repair run of an
early gap reports the whole topic after it as lag), the applier's run failed after others had left their
events to it, or its retries ran out. This sensor finds such a queue (spans older than `stranded_after_s`, and
no ingest or replay run in flight that would apply them) and requests one run of `shopper_analytics` that
applies it at once. A sweep run that finds another step applying leaves the queue to it like any run; if
that one goes away too, the next tick requests another sweep. A failed sweep is not retried by Dagster: the
sensor requests the next attempt after `retry_backoff_s`, doubling (at most an hour), and each failed run
alerts like any other.
"""

from __future__ import annotations

import time

import dagster as dg

from clickstream_dagster.analytics.sessions.update import queue_head
from clickstream_dagster.assets.ingestion import ACTIVE_STATUSES, INGEST_JOB_NAME, REPLAY_JOB_NAME
from clickstream_dagster.assets.sessions import ASSET_KEYS, CHECKS, ShopperAnalyticsConfig
from clickstream_dagster.resources.postgres import PostgresResource

SENSOR_NAME = "stranded_sessions"
SWEEP_TAG = "clickstream/sessions-sweep"


MAX_BACKOFF_S = 3600.0


def build_sessions_sensor(
    job_name: str = INGEST_JOB_NAME,
    interval_seconds: int = 30,
    stranded_after_s: float = 30.0,
    retry_backoff_s: float = 60.0,
) -> dg.SensorDefinition:
    """A sensor that requests a run of the sessions step for a queue nobody will apply (see the module)."""

    @dg.sensor(
        name=SENSOR_NAME,
        job_name=job_name,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Loaded events waiting for sessions with no run to apply them -> a run of shopper_analytics",
    )
    def stranded_sessions(
        context: dg.SensorEvaluationContext, postgres: PostgresResource
    ) -> dg.RunRequest | dg.SkipReason:
        for job in (INGEST_JOB_NAME, REPLAY_JOB_NAME):
            active = context.instance.get_runs_count(dg.RunsFilter(job_name=job, statuses=ACTIVE_STATUSES))
            if active:
                return dg.SkipReason(
                    f"{active} {job} runs in progress (their sessions steps apply the queue)"
                )
        with postgres.connection() as conn:
            head = queue_head(conn)
        if head.spans == 0 or head.oldest_us is None:
            return dg.SkipReason("sessions are up to date: nothing queued")
        if head.waited_s < stranded_after_s:
            return dg.SkipReason(f"{head.spans:,} spans queued {head.waited_s:.0f} s ago; waiting for a run")
        # The sweeps of this queue so far (its oldest span is its identity), newest first.
        sweeps = context.instance.get_run_records(
            dg.RunsFilter(job_name=job_name, tags={SWEEP_TAG: str(head.oldest_us)}), limit=20
        )
        failed = sum(1 for r in sweeps if r.dagster_run.status == dg.DagsterRunStatus.FAILURE)
        if sweeps and sweeps[0].dagster_run.status == dg.DagsterRunStatus.FAILURE and sweeps[0].end_time:
            wait = min(retry_backoff_s * 2 ** (failed - 1), MAX_BACKOFF_S)
            since = time.time() - sweeps[0].end_time
            if since < wait:
                return dg.SkipReason(
                    f"{failed} sweeps of the queue failed (see their runs); the next in {wait - since:.0f} s"
                )
        attempt = len(sweeps) + 1
        context.log.info(
            f"{head.spans:,} spans queued for sessions, the oldest {head.waited_s:.0f} s ago, and no run in "
            f"flight to apply them: requesting a run of the sessions step (attempt {attempt})"
        )
        return dg.RunRequest(
            run_key=f"sessions/{head.oldest_us}/{attempt}",
            asset_selection=ASSET_KEYS,
            asset_check_keys=[check.key for check in CHECKS],
            run_config=dg.RunConfig(ops={"shopper_analytics": ShopperAnalyticsConfig(max_defer_seconds=0)}),
            # The sensor's attempts, with their backoff, are the only retries of a sweep.
            tags={SWEEP_TAG: str(head.oldest_us), "dagster/max_retries": "0"},
        )

    return stranded_sessions
