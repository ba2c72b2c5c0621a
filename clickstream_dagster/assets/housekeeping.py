"""Housekeeping: what a deployment accumulates and nobody reads again, deleted on a schedule so that a year of
running costs what a week does. One job, five ops, each with its own retention setting (days):

- `prune_run_history`: finished ingest and quarantine-replay runs (one every few seconds while events flow)
  older than `runs_days`, with their event logs, through Dagster's public `DagsterInstance.delete_run`. The
  Kafka sensor never needs them: its cursor says what was planned, and it reads only the newest runs (a crash
  between launching runs and storing its cursor) and those of the last minute (failed, about to be retried).
  Sensor and schedule ticks are purged by the instance's own `retention` settings (stack/dagster.py);
- `prune_quarantine`: quarantine rows replayed more than `quarantine_days` ago (their events are stored, under
  the same source coordinates; the ledger keeps the counts);
- `prune_model_artefacts`: the artefacts (registry bytes and exported files) of model versions not served,
  trained more than `models_days` ago; each version's row, with its evidence, stays;
- `drop_expired_events`: the months of clickstream_events that ended more than `events_days` before the newest
  event (CLICKSTREAM_EVENT_RETENTION_DAYS; unset, the default: every month is kept), whole partitions at a
  time (ingestion/retention.py says when a month must stay longer);
- `close_old_windows`: the distinct-id sets of the 5-minute windows that ended more than the lateness horizon
  (CLICKSTREAM_LATENESS_HORIZON_DAYS, 180) before the newest event: no event can change them any more (the
  loader quarantines it), so their counts stay in windowed_stats and their sets go.

What is kept forever, and every setting: docs/operations.md, "Running it for months".
"""

import datetime as dt
import time
from pathlib import Path

import dagster as dg
from pydantic import Field

from clickstream_dagster.analytics.windows.sets import close_windows
from clickstream_dagster.assets.ingestion import INGEST_JOB_NAME, REPLAY_JOB_NAME
from clickstream_dagster.ingestion.retention import drop_expired_months, lateness_ms, retention_days
from clickstream_dagster.resources import PostgresResource
from clickstream_dagster.sql import ml as ml_queries
from clickstream_dagster.sql import queries as q

HOUSEKEEPING_JOB_NAME = "housekeeping"
FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


class RunHistoryConfig(dg.Config):
    runs_days: float = Field(
        default=7.0, description="Delete finished ingest_events and replay_quarantine runs older than this"
    )
    batch: int = Field(default=500, description="Runs looked up per query")


@dg.op(description="Delete finished ingestion runs (and their event logs) older than `runs_days`")
def prune_run_history(context: dg.OpExecutionContext, config: RunHistoryConfig) -> int:
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=config.runs_days)
    started = time.monotonic()
    deleted = 0
    for job in (INGEST_JOB_NAME, REPLAY_JOB_NAME):
        while True:
            records = context.instance.get_run_records(
                dg.RunsFilter(job_name=job, statuses=FINISHED, created_before=cutoff),
                limit=config.batch,
                ascending=True,
            )
            for record in records:
                context.instance.delete_run(record.dagster_run.run_id)
            deleted += len(records)
            if records:
                context.log.info(
                    f"{job}: {deleted:,} runs deleted so far [{time.monotonic() - started:.0f} s]"
                )
            if len(records) < config.batch:
                break
    context.log.info(f"deleted {deleted:,} runs created before {cutoff:%Y-%m-%d %H:%M} UTC")
    context.add_output_metadata({"runs_deleted": deleted, "created_before": cutoff.isoformat()})
    return deleted


class QuarantineRetentionConfig(dg.Config):
    quarantine_days: float = Field(default=30.0, description="Delete quarantine rows replayed longer ago")


@dg.op(description="Delete quarantine rows replayed more than `quarantine_days` ago")
def prune_quarantine(
    context: dg.OpExecutionContext, config: QuarantineRetentionConfig, postgres: PostgresResource
) -> int:
    with postgres.connection() as conn:
        deleted = conn.execute(q.PRUNE_REPLAYED_QUARANTINE, {"days": config.quarantine_days}).rowcount
    context.log.info(
        f"deleted {deleted:,} quarantine rows replayed more than {config.quarantine_days:g} days ago"
    )
    context.add_output_metadata({"rows_deleted": deleted})
    return deleted


class ModelRetentionConfig(dg.Config):
    models_days: float = Field(
        default=30.0, description="Drop the artefacts of versions not served, trained longer ago"
    )


@dg.op(description="Drop the artefacts of model versions not served, trained more than `models_days` ago")
def prune_model_artefacts(
    context: dg.OpExecutionContext, config: ModelRetentionConfig, postgres: PostgresResource
) -> int:
    with postgres.connection() as conn:
        pruned = conn.execute(ml_queries.PRUNE_MODEL_ARTEFACTS, {"days": config.models_days}).fetchall()
    files = 0
    for _version, path in pruned:
        if path and Path(path).is_file():
            Path(path).unlink()
            files += 1
    context.log.info(f"dropped the artefacts of {len(pruned):,} model versions ({files:,} exported files)")
    context.add_output_metadata({"versions_pruned": len(pruned), "files_deleted": files})
    return len(pruned)


class EventRetentionConfig(dg.Config):
    events_days: float | None = Field(
        default=None,
        description="Drop the months of raw events that ended longer before the newest event (default:"
        " CLICKSTREAM_EVENT_RETENTION_DAYS; unset: keep every month)",
    )


@dg.op(description="Drop the months of raw events older than the retention (none by default)")
def drop_expired_events(
    context: dg.OpExecutionContext, config: EventRetentionConfig, postgres: PostgresResource
) -> int:
    days = config.events_days if config.events_days is not None else retention_days()
    if days is None:
        context.log.info("event retention is not set (CLICKSTREAM_EVENT_RETENTION_DAYS): every month is kept")
        context.add_output_metadata({"months_dropped": 0, "rows_dropped": 0})
        return 0
    with postgres.connection() as conn:
        result = drop_expired_months(conn, days, log=context.log.info)
    context.log.info(
        f"dropped {len(result.dropped):,} months ({result.rows:,} rows) that ended more than {days:g} days"
        " before the newest event"
    )
    context.add_output_metadata(
        {
            "months_dropped": len(result.dropped),
            "rows_dropped": result.rows,
            "dropped": dg.MetadataValue.json([m.name for m in result.dropped]),
            "kept": dg.MetadataValue.json(result.kept),
        }
    )
    return result.rows


@dg.op(
    description="Delete the distinct-id sets of the windows the lateness horizon closed (their counts stay)"
)
def close_old_windows(context: dg.OpExecutionContext, postgres: PostgresResource) -> int:
    horizon = lateness_ms()
    with postgres.connection() as conn:
        closed = close_windows(conn, horizon)
    context.log.info(
        f"deleted the sets of {closed:,} closed windows (lateness horizon {horizon / 86_400_000:g} days)"
    )
    context.add_output_metadata({"window_sets_deleted": closed})
    return closed


@dg.job(
    name=HOUSEKEEPING_JOB_NAME,
    description="Delete old ingestion runs, replayed quarantine rows, unserved model artefacts, expired months of"
    " raw events and the sets of closed windows",
    tags={"dagster/max_retries": "1"},
)
def housekeeping() -> None:
    prune_run_history()
    prune_quarantine()
    prune_model_artefacts()
    drop_expired_events()
    close_old_windows()
