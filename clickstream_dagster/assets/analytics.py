"""Analytics: 5-minute windowed stats (pyspark) and per-event-type totals, both exact and incremental."""

import time
from datetime import timedelta

import dagster as dg

from clickstream_dagster.analytics.windows import apply_window_deltas, compute_window_deltas, pending_batches
from clickstream_dagster.assets.ingestion import RAW_EVENTS
from clickstream_dagster.resources import PostgresResource, SparkResource
from clickstream_dagster.resources.spark import jdbc_from_libpq
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
    with postgres.connection() as lock_conn:
        # One applier at a time (apply_window_deltas would also refuse batches another run took first).
        lock_conn.execute(q.WINDOW_STATS_LOCK)
        try:
            batches = pending_batches(lock_conn)
            lock_conn.commit()
            if batches.ids:
                started = time.perf_counter()
                deltas = compute_window_deltas(
                    spark.session(), jdbc_from_libpq(postgres.conninfo), batches.ids, batches.events
                )
                computed = time.perf_counter()
                with postgres.connection() as conn:
                    result = apply_window_deltas(conn, batches.ids, deltas)
                context.log.info(
                    f"applied {len(batches.ids):,} batches ({batches.events:,} new events) on {spark.endpoint}: "
                    f"{result.rows:,} rows of {result.windows:,} windows changed (spark {computed - started:.2f} s,"
                    f" write {time.perf_counter() - computed:.2f} s)"
                )
            else:
                result = None
                context.log.info("no new events since the last run")
        finally:
            lock_conn.execute(q.WINDOW_STATS_UNLOCK)
        summary = lock_conn.execute(q.WINDOW_STATS_SUMMARY).fetchone()
        preview = lock_conn.execute(q.WINDOW_STATS_PREVIEW).fetchall()
    n_windows, n_events, first, last = summary if summary else (0, 0, None, None)
    return dg.MaterializeResult(
        metadata={
            "batches_applied": result.batches if result else 0,
            "events_applied": batches.events,
            "windows_changed": result.windows if result else 0,
            "rows_written": result.rows if result else 0,
            "spark": spark.endpoint,
            "windows_total": n_windows,
            "events_covered": int(n_events),
            "time_span": f"{first} .. {last}",
            "dagster/row_count": n_windows,
            "latest_windows": dg.MetadataValue.md(
                _markdown_table(["window_start", "event", "events", "users", "items"], preview)
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
