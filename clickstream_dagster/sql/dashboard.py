"""Every SQL query the Streamlit dashboard runs, all on the events database.

Dagster's side (materializations, runs) is read from its webserver's GraphQL API instead: those queries are
in `clickstream_dagster/clients/dagster_queries.py`.

Read-only. Parameters are always bound (%(name)s), never formatted into the text. Event times are UTC.
"""

from __future__ import annotations

# ---- live traffic ------------------------------------------------------------------------------------------

# Separate sub-selects, each cheap at any scale: the number of events and the latest one's time from the
# event_statistics asset, and the ingestion ledger records when each range landed.
EVENT_TOTALS = """
SELECT (SELECT coalesce(sum(event_count), 0)::bigint FROM event_statistics) AS events,
       (SELECT max(last_event_time) FROM event_statistics)                  AS last_event_time,
       (SELECT max(ingested_at) FROM ingested_ranges)  AS last_ingested_at,
       (SELECT count(*) FROM quarantine WHERE replayed_at IS NULL) AS quarantined
"""

EVENT_STATISTICS = """
SELECT event, event_count, unique_users, unique_items, updated_at
FROM event_statistics
ORDER BY event_count DESC, event
"""

# Time of day (UTC) from the 5-minute windows of the last `days` (up to the newest window): exact (counts add
# up), and a range of windowed_stats' key, so its cost follows those days, not the history.
HOURLY_PATTERN = """
SELECT extract(hour FROM window_start AT TIME ZONE 'UTC')::int AS hour, event, sum(event_count)::bigint AS events
FROM windowed_stats
WHERE window_start > (SELECT max(window_start) FROM windowed_stats) - make_interval(days => %(days)s)
GROUP BY 1, 2
ORDER BY 1, 2
"""

# Windows within `lookback` of the newest one (all of them when it is NULL), summed into `bucket`s.
# Distinct counts do not add up across windows, so they are exact only when the bucket is one window (analytics.windows.WINDOW_INTERVAL).
WINDOWED_STATS = """
WITH newest AS (SELECT max(window_start) AS t FROM windowed_stats)
SELECT date_bin(%(bucket)s::interval, w.window_start, TIMESTAMPTZ '1970-01-01 00:00+00') AS bucket_start,
       w.event,
       sum(w.event_count)::bigint  AS events,
       sum(w.unique_users)::bigint AS unique_users,
       sum(w.unique_items)::bigint AS unique_items,
       count(*)                    AS windows
FROM windowed_stats w, newest
WHERE %(lookback)s::interval IS NULL OR w.window_start > newest.t - %(lookback)s::interval
GROUP BY 1, 2
ORDER BY 1, 2
"""

WINDOWED_STATS_SUMMARY = """
SELECT count(DISTINCT window_start) AS windows, coalesce(sum(event_count), 0)::bigint AS events,
       min(window_start) AS first_window, max(window_start) AS last_window, max(updated_at) AS updated_at
FROM windowed_stats
"""

# The items with the most events since `since_ms` (the newest event time, NEWEST_EVENT_TIME, less a day; epoch
# ms): the newest event time is one row per event type of event_statistics, and the day a range of the
# block-range index on "timestamp" (rows arrive roughly in event-time order), so the cost follows that day,
# not the history. The bound is a parameter, not a sub-select: the planner must see it to use the index.
NEWEST_EVENT_TIME = "SELECT max(last_event_time) FROM event_statistics"
TOP_ITEMS = """
WITH top AS (
    SELECT itemid,
           count(*)                                        AS events,
           count(*) FILTER (WHERE event = 'view')          AS views,
           count(*) FILTER (WHERE event = 'addtocart')     AS addtocarts,
           count(*) FILTER (WHERE event = 'transaction')   AS transactions
    FROM clickstream_events
    WHERE "timestamp" > %(since_ms)s
    GROUP BY itemid
    ORDER BY count(*) DESC, itemid
    LIMIT %(limit)s
)
SELECT t.itemid, t.events, t.views, t.addtocarts, t.transactions, i.categoryid, i.category_path, i.available
FROM top t LEFT JOIN items i USING (itemid)
ORDER BY t.events DESC, t.itemid
"""

# ---- pipeline health (events database) ----------------------------------------------------------------------

QUARANTINE_BY_REASON = """
SELECT source, split_part(reason, ':', 1) AS reason, count(*) AS rows, max(quarantined_at) AS last_at
FROM quarantine
WHERE replayed_at IS NULL
GROUP BY 1, 2
ORDER BY 3 DESC, 1, 2
"""

# The ledger of raw_events: per range, messages read = rows inserted + rows quarantined, and messages read +
# offsets without a message (transaction markers, aborted records, compacted) + offsets lost = end - start.
RECONCILIATION_BY_PARTITION = """
SELECT kafka_topic, kafka_partition,
       sum(ranges_merged)::bigint                                                      AS ranges,
       sum(messages_read)::bigint                                                      AS messages_read,
       sum(rows_inserted)::bigint                                                      AS rows_inserted,
       sum(rows_quarantined)::bigint                                                   AS rows_quarantined,
       sum(skipped_control + skipped_aborted + skipped_compacted)::bigint              AS offsets_skipped,
       sum(lost_retention)::bigint                                                     AS offsets_lost,
       count(*) FILTER (WHERE messages_read <> rows_inserted + rows_quarantined
                           OR messages_read + skipped_control + skipped_aborted + skipped_compacted
                              + lost_retention <> end_offset - start_offset)          AS mismatched_ranges,
       max(end_offset)                                                                 AS ingested_up_to,
       max(ingested_at)                                                                AS last_ingested_at
FROM ingested_ranges
GROUP BY 1, 2
ORDER BY 1, 2
"""

MISMATCHED_RANGES = """
SELECT kafka_topic, kafka_partition, start_offset, end_offset, messages_read, rows_inserted, rows_quarantined,
       messages_read - rows_inserted - rows_quarantined AS unaccounted,
       end_offset - start_offset - messages_read - skipped_control - skipped_aborted - skipped_compacted
           - lost_retention AS offsets_unaccounted,
       dagster_run_id, ingested_at
FROM ingested_ranges
WHERE messages_read <> rows_inserted + rows_quarantined
   OR messages_read + skipped_control + skipped_aborted + skipped_compacted + lost_retention
      <> end_offset - start_offset
ORDER BY ingested_at DESC
LIMIT %(limit)s
"""

# The ledger gaps the Kafka sensor found (planned offsets no run is working on any more) and requested again,
# with their repair attempts; open while no ledger range covers them yet.
REPAIRED_GAPS = """
SELECT g.kafka_topic, g.kafka_partition, g.start_offset, g.end_offset, g.end_offset - g.start_offset AS offsets,
       g.attempts, g.first_seen_at, g.last_attempt_at,
       NOT EXISTS (SELECT 1 FROM ingested_ranges r
                   WHERE r.kafka_topic = g.kafka_topic AND r.kafka_partition = g.kafka_partition
                     AND r.start_offset <= g.start_offset AND r.end_offset >= g.end_offset) AS open
FROM ingestion_repairs g
ORDER BY open DESC, g.first_seen_at DESC
LIMIT %(limit)s
"""

# ---- models and recommendations ----------------------------------------------------------------------------

MODEL_REGISTRY = """
SELECT version, model_type, status, reason, metrics, trained_at, decided_at
FROM model_registry
ORDER BY version
"""

# Recommendations and popular lists are those of the served model version, (SELECT max(model_version) FROM
# popular_items): popular_items is written last for each version, so its newest version there is the newest
# complete one (the tables also hold the previous version while a new one is written).

RECOMMENDED_VISITORS = """
SELECT visitorid, count(*) AS recommendations, max(model_version) AS model_version
FROM recommendations
WHERE model_version = (SELECT max(model_version) FROM popular_items)
GROUP BY visitorid
ORDER BY visitorid
LIMIT %(limit)s
"""

RECOMMENDATION_COVERAGE = (
    "SELECT count(DISTINCT visitorid) AS visitors, max(model_version) AS model_version FROM recommendations "
    "WHERE model_version = (SELECT max(model_version) FROM popular_items)"
)

VISITOR_HISTORY = """
SELECT e.event_time, e.event, e.itemid, i.categoryid, e.transactionid
FROM clickstream_events e LEFT JOIN items i USING (itemid)
WHERE e.visitorid = %(visitorid)s
ORDER BY e.event_time DESC, e.id DESC
LIMIT %(limit)s
"""

VISITOR_EVENT_COUNT = "SELECT count(*) FROM clickstream_events WHERE visitorid = %(visitorid)s"

VISITOR_RECOMMENDATIONS = """
SELECT r.rank, r.itemid, r.score, r.model_version, i.categoryid, i.category_path, i.available
FROM recommendations r LEFT JOIN items i USING (itemid)
WHERE r.visitorid = %(visitorid)s AND r.model_version = (SELECT max(model_version) FROM popular_items)
ORDER BY r.rank
"""

POPULAR_ITEMS = """
SELECT p.rank, p.itemid, p.score, p.visitors, p.trend, p.model_version, p.computed_at,
       i.categoryid, i.category_path, i.available
FROM popular_items p LEFT JOIN items i USING (itemid)
WHERE p.list = %(list)s AND p.model_version = (SELECT max(model_version) FROM popular_items)
ORDER BY p.rank
LIMIT %(limit)s
"""

# ---- shoppers: sessions, funnel, abandonment, retention (the views of migration 0013) ------------------------

# The funnel over every session, from the counts per flag combination (1 viewed, 2 added to cart, 4 bought) of
# the day grain: a session starts in exactly one day. (Visitors of the whole span can not be summed from days:
# they are left to the per-period figures.)
FUNNEL_TOTALS = """
SELECT coalesce(sum(sessions), 0)                                  AS sessions,
       coalesce(sum(sessions) FILTER (WHERE flags & 1 = 1), 0)    AS viewed,
       coalesce(sum(sessions) FILTER (WHERE flags & 2 = 2), 0)    AS carted,
       coalesce(sum(sessions) FILTER (WHERE flags & 4 = 4), 0)    AS bought,
       coalesce(sum(sessions) FILTER (WHERE flags & 3 = 3), 0)    AS viewed_carted,
       coalesce(sum(sessions) FILTER (WHERE flags & 6 = 6), 0)    AS carted_bought,
       coalesce(sum(sessions) FILTER (WHERE flags & 5 = 5), 0)    AS viewed_bought,
       coalesce(sum(sessions) FILTER (WHERE flags = 7), 0)        AS all_steps,
       coalesce(sum(sessions) FILTER (WHERE flags & 6 = 2), 0)    AS abandoned,
       coalesce(sum(bounced), 0)                                   AS bounced
FROM funnel_counts WHERE grain = 'day'
"""

# Sessions per period of session start, for the newest `lookback` (NULL: everything).
SESSIONS_OVER_TIME = """
SELECT period_start, sessions, bounce_rate, median_session_ms / 60000.0 AS median_minutes,
       cart_abandonment_rate, view_to_purchase_rate, visitors
FROM funnel
WHERE grain = %(grain)s
  AND (%(lookback)s::interval IS NULL
       OR period_start > (SELECT max(period_start) FROM funnel_counts WHERE grain = %(grain)s) - %(lookback)s::interval)
ORDER BY period_start
"""

RETENTION_MATRIX = """
SELECT cohort_week, weeks_after, visitors, cohort_visitors, active_share FROM retention
WHERE cohort_week > (SELECT max(cohort_week) FROM retention_counts) - %(weeks)s * 7
ORDER BY cohort_week, weeks_after
"""

# The items (categories) most often bought in a session that viewed them, beside the most viewed; at least
# `min_views` viewing sessions (1 or more), so one lucky view does not top the list. The items' rankings walk
# the indexes of item_funnel_totals (0016) and stop at the limit, however many items were ever seen: the
# conversion ranking's ORDER BY is the expression of its partial index, which holds min_views >= 5.
TOP_CONVERTING_ITEMS = """
SELECT f.itemid, f.sessions_viewed, f.sessions_carted, f.sessions_bought, f.sessions_viewed_bought,
       f.sessions_viewed_bought::float8 / f.sessions_viewed AS view_to_purchase_rate, i.categoryid, i.category_path
FROM item_funnel_totals f LEFT JOIN items i USING (itemid)
WHERE f.sessions_viewed >= %(min_views)s
ORDER BY f.sessions_viewed_bought::float8 / f.sessions_viewed DESC, f.sessions_viewed_bought DESC, f.itemid
LIMIT %(limit)s
"""
TOP_VIEWED_ITEMS = """
SELECT f.itemid, f.sessions_viewed, f.sessions_carted, f.sessions_bought, f.sessions_viewed_bought,
       f.sessions_viewed_bought::float8 / nullif(f.sessions_viewed, 0) AS view_to_purchase_rate, i.categoryid,
       i.category_path
FROM item_funnel_totals f LEFT JOIN items i USING (itemid)
ORDER BY f.sessions_viewed DESC, f.itemid
LIMIT %(limit)s
"""
CATEGORY_CONVERSION = """
SELECT f.categoryid, f.sessions_viewed, f.sessions_carted, f.sessions_bought, f.sessions_viewed_bought,
       f.view_to_purchase_rate, c.parentid
FROM category_funnel f LEFT JOIN category_tree c USING (categoryid)
WHERE f.sessions_viewed >= %(min_views)s
ORDER BY f.sessions_viewed DESC, f.categoryid
LIMIT %(limit)s
"""
