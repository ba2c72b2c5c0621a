"""Analytics: 5-minute windowed stats (pyspark) and per-event-type totals, both exact and incremental."""

from datetime import timedelta

import dagster as dg

from clickstream_dagster.analytics.windows.stats import update_windowed_stats
from clickstream_dagster.assets.ingestion import RAW_EVENTS
from clickstream_dagster.clients.spark import jdbc_from_libpq
from clickstream_dagster.resources import PostgresResource, SparkResource
from clickstream_dagster.sql import queries as q

WINDOWED_STATS = dg.AssetKey("windowed_stats")
EVENT_STATISTICS = dg.AssetKey("event_statistics")
GROUP = "analytics"


@dg.asset(
    key=WINDOWED_STATS,
    deps=[RAW_EVENTS],
    group_name=GROUP,
    kinds={"spark", "postgres"},
    # First of the steps that wait on raw_events' checks: the live view is read from here.
    op_tags={"dagster/priority": "1"},
    freshness_policy=dg.FreshnessPolicy.time_window(
        fail_window=timedelta(minutes=30), warn_window=timedelta(minutes=10)
    ),
    description=(
        "5-minute tumbling windows on event time, per event type: event_count, unique_users, unique_items "
        "(exact). Each run aggregates, with pyspark, only the events ingested since the last run and adds them."
    ),
)
def windowed_stats(
    context: dg.AssetExecutionContext, spark: SparkResource, postgres: PostgresResource
) -> dg.MaterializeResult:
    update = update_windowed_stats(postgres.connection, spark.session, jdbc_from_libpq(postgres.conninfo))
    applied = update.applied
    if applied is None:
        context.log.info("no new events since the last run")
    else:
        context.log.info(
            f"applied {applied.batches:,} batches ({update.batches.events:,} new events) on {spark.endpoint}: "
            f"{applied.rows:,} rows of {applied.windows:,} windows changed (spark {update.spark_seconds:.2f} s,"
            f" write {update.write_seconds:.2f} s)"
        )
    return dg.MaterializeResult(
        metadata={
            "batches_applied": applied.batches if applied else 0,
            "events_applied": update.batches.events,
            "windows_changed": applied.windows if applied else 0,
            "rows_written": applied.rows if applied else 0,
            "spark": spark.endpoint,
            "windows_total": update.windows_total,
            "events_covered": update.events_covered,
            "time_span": f"{update.first_window} .. {update.last_window_end}",
            "dagster/row_count": update.windows_total,
            "latest_windows": dg.MetadataValue.md(
                _markdown_table(["window_start", "event", "events", "users", "items"], update.preview)
            ),
        }
    )


@dg.asset(
    key=EVENT_STATISTICS,
    deps=[RAW_EVENTS],
    group_name=GROUP,
    kinds={"postgres"},
    description=(
        "Per event type: total events, unique visitors and unique items over everything ingested (exact; "
        "the totals are kept by the loading transaction)."
    ),
)
def event_statistics(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    with postgres.connection() as conn:
        rows = conn.execute(q.REFRESH_EVENT_STATISTICS).fetchall()
    context.log.info(f"event statistics: {rows}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(rows),
            "total_events": sum(r[1] for r in rows),
            "statistics": dg.MetadataValue.md(_markdown_table(["event", "events", "users", "items"], rows)),
        }
    )


def _markdown_table(header: list[str], rows: list[tuple[object, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
