"""Every query the pipeline runs against its own tables, in one place. Parameters are always bound (%s),
never formatted into the text. Tables themselves are created only by the migrations next to this file."""

from __future__ import annotations

# ---- raw_events: staging + idempotent insert ---------------------------------------------------------------

CREATE_EVENT_STAGING = """
CREATE TEMP TABLE staging_events (
    "timestamp" bigint, visitorid bigint, event text, itemid bigint, transactionid bigint,
    produced_ms bigint, kafka_partition integer, kafka_offset bigint
) ON COMMIT DROP
"""

COPY_EVENT_STAGING = """
COPY staging_events ("timestamp", visitorid, event, itemid, transactionid, produced_ms, kafka_partition,
                     kafka_offset) FROM STDIN (FORMAT BINARY)
"""

EVENT_STAGING_TYPES = ("int8", "int8", "text", "int8", "int8", "int8", "int4", "int8")

# Loading transactions take this lock after their COPY into the (private) staging table, so the shared
# state below is only ever written by one of them at a time: no deadlocks between concurrent runs whose
# pair inserts overlap, and the event_totals rows are never contended.
INGEST_LOCK = "SELECT pg_advisory_xact_lock(hashtext('clickstream_ingest'))"

# One statement: the idempotent insert, and for exactly the rows it inserted (a re-run inserts none) the state
# that keeps windowed_stats and event_statistics incremental and exact:
# - window_visitors / window_items: distinct (window, event, visitor|item) pairs. A pair the insert creates is
#   new to its window, so the change rows carry its visitorid / itemid; others carry NULL. Over any set of
#   batches, count(DISTINCT visitorid) per (window, event) is then exactly the growth of unique_users.
# - window_changes + window_change_batches: the queue windowed_stats aggregates (with Spark) and removes.
# - seen_visitors / seen_items and event_totals: the all-time distinct pairs and per event type totals.
# event_time and produced_at are derived here, with the same expressions the checks use. Rows go in sorted by
# index key (measured: random-order index inserts dominate the cost of a batch).
INSERT_EVENTS_FROM_STAGING = """
WITH ins AS (
    INSERT INTO clickstream_events ("timestamp", event_time, visitorid, event, itemid, transactionid,
                                    produced_at, kafka_topic, kafka_partition, kafka_offset)
    SELECT "timestamp", to_timestamp("timestamp" / 1000.0), visitorid, event, itemid, transactionid,
           CASE WHEN produced_ms > 0 THEN to_timestamp(produced_ms / 1000.0) END,
           %(topic)s, kafka_partition, kafka_offset
    FROM staging_events
    ORDER BY "timestamp"
    ON CONFLICT (kafka_topic, kafka_partition, kafka_offset) DO NOTHING
    RETURNING kafka_partition, "timestamp", event, visitorid, itemid
), new_rows AS (
    SELECT kafka_partition, to_timestamp(floor("timestamp" / 300000.0) * 300) AS window_start, event,
           visitorid, itemid
    FROM ins
), new_users AS (
    INSERT INTO window_visitors (window_start, event, visitorid)
    SELECT DISTINCT window_start, event, visitorid FROM new_rows ORDER BY 1, 2, 3
    ON CONFLICT DO NOTHING
    RETURNING window_start, event, visitorid
), new_items AS (
    INSERT INTO window_items (window_start, event, itemid)
    SELECT DISTINCT window_start, event, itemid FROM new_rows ORDER BY 1, 2, 3
    ON CONFLICT DO NOTHING
    RETURNING window_start, event, itemid
), batch AS (
    INSERT INTO window_change_batches (events)
    SELECT count(*) FROM new_rows HAVING count(*) > 0
    RETURNING batch_id
), changes AS (
    INSERT INTO window_changes (batch_id, window_start, event, visitorid, itemid)
    SELECT b.batch_id, n.window_start, n.event, u.visitorid, i.itemid
    FROM new_rows n
    CROSS JOIN batch b
    LEFT JOIN new_users u
           ON u.window_start = n.window_start AND u.event = n.event AND u.visitorid = n.visitorid
    LEFT JOIN new_items i
           ON i.window_start = n.window_start AND i.event = n.event AND i.itemid = n.itemid
), seen_v AS (
    INSERT INTO seen_visitors (event, visitorid)
    SELECT DISTINCT event, visitorid FROM new_rows ORDER BY 1, 2
    ON CONFLICT DO NOTHING
    RETURNING event
), seen_i AS (
    INSERT INTO seen_items (event, itemid)
    SELECT DISTINCT event, itemid FROM new_rows ORDER BY 1, 2
    ON CONFLICT DO NOTHING
    RETURNING event
), totals AS (
    INSERT INTO event_totals AS t (event, event_count, unique_users, unique_items)
    SELECT event, sum(n), sum(u), sum(i)
    FROM (SELECT event, count(*) AS n, 0 AS u, 0 AS i FROM new_rows GROUP BY event
          UNION ALL SELECT event, 0, count(*), 0 FROM seen_v GROUP BY event
          UNION ALL SELECT event, 0, 0, count(*) FROM seen_i GROUP BY event) d
    GROUP BY event
    ON CONFLICT (event) DO UPDATE
    SET event_count = t.event_count + EXCLUDED.event_count,
        unique_users = t.unique_users + EXCLUDED.unique_users,
        unique_items = t.unique_items + EXCLUDED.unique_items
)
SELECT kafka_partition, count(*) FROM new_rows GROUP BY kafka_partition
"""

CREATE_QUARANTINE_STAGING = """
CREATE TEMP TABLE staging_quarantine (
    kafka_partition integer, kafka_offset bigint, raw_payload bytea, reason text
) ON COMMIT DROP
"""

COPY_QUARANTINE_STAGING = """
COPY staging_quarantine (kafka_partition, kafka_offset, raw_payload, reason) FROM STDIN (FORMAT BINARY)
"""

QUARANTINE_STAGING_TYPES = ("int4", "int8", "bytea", "text")

INSERT_QUARANTINE_FROM_STAGING = """
WITH ins AS (
    INSERT INTO quarantine (source, kafka_topic, kafka_partition, kafka_offset, raw_payload, reason)
    SELECT 'kafka', %(topic)s, kafka_partition, kafka_offset, raw_payload, reason FROM staging_quarantine
    ON CONFLICT (kafka_topic, kafka_partition, kafka_offset) WHERE source = 'kafka' DO NOTHING
    RETURNING kafka_partition
)
SELECT kafka_partition, count(*) FROM ins GROUP BY kafka_partition
"""

RECORD_INGESTED_RANGE = """
INSERT INTO ingested_ranges (kafka_topic, kafka_partition, start_offset, end_offset,
                             messages_read, rows_inserted, rows_quarantined, dagster_run_id)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (kafka_topic, kafka_partition, start_offset, end_offset) DO UPDATE
SET messages_read = EXCLUDED.messages_read,
    rows_inserted = ingested_ranges.rows_inserted + EXCLUDED.rows_inserted,
    rows_quarantined = ingested_ranges.rows_quarantined + EXCLUDED.rows_quarantined,
    dagster_run_id = EXCLUDED.dagster_run_id,
    ingested_at = now()
"""

COUNT_EVENTS = "SELECT count(*) FROM clickstream_events"

# ---- live_clickstream_events ------------------------------------------------------------------------------

# Only rows newer than what the live table already holds, and never more than it may keep: a full-scale
# backfill must not copy millions of rows just to prune them again. (A batch that commits late with an older
# created_at than the live table's newest row is not added: the live view is a recent slice, not a ledger.)
REFRESH_LIVE_EVENTS = """
INSERT INTO live_clickstream_events (kafka_topic, kafka_partition, kafka_offset, "timestamp", event_time,
                                     visitorid, event, itemid, transactionid, created_at)
SELECT kafka_topic, kafka_partition, kafka_offset, "timestamp", event_time, visitorid, event, itemid,
       transactionid, created_at
FROM clickstream_events
WHERE created_at >= greatest(now() - make_interval(secs => %(horizon)s),
                             (SELECT coalesce(max(created_at), '-infinity') FROM live_clickstream_events))
ORDER BY created_at DESC, id DESC
LIMIT %(max_rows)s
ON CONFLICT (kafka_topic, kafka_partition, kafka_offset) DO NOTHING
"""

PRUNE_LIVE_EVENTS = "DELETE FROM live_clickstream_events WHERE created_at < now() - make_interval(secs => %s)"

# Keeps at most N rows: the newest by ingestion time, then by offset.
CAP_LIVE_EVENTS = """
DELETE FROM live_clickstream_events l
USING (
    SELECT kafka_topic, kafka_partition, kafka_offset FROM live_clickstream_events
    ORDER BY created_at DESC, kafka_offset DESC OFFSET %s
) old
WHERE (l.kafka_topic, l.kafka_partition, l.kafka_offset) = (old.kafka_topic, old.kafka_partition, old.kafka_offset)
"""

COUNT_LIVE_EVENTS = "SELECT count(*), min(event_time), max(event_time) FROM live_clickstream_events"

# ---- windowed_stats (its queue and deltas: analytics/windows.py) ----------------------------------------------------

WINDOW_STATS_LOCK = "SELECT pg_advisory_lock(hashtext('windowed_stats'))"
WINDOW_STATS_UNLOCK = "SELECT pg_advisory_unlock(hashtext('windowed_stats'))"

WINDOW_STATS_SUMMARY = """
SELECT count(DISTINCT window_start), coalesce(sum(event_count), 0), min(window_start), max(window_end)
FROM windowed_stats
"""

WINDOW_STATS_PREVIEW = """
SELECT window_start, event, event_count, unique_users, unique_items
FROM windowed_stats ORDER BY window_start DESC, event LIMIT 9
"""

# ---- event_statistics --------------------------------------------------------------------------------------

# event_totals is maintained by the loading transaction; this publishes it (rows unchanged are left alone).
REFRESH_EVENT_STATISTICS = """
WITH upsert AS (
    INSERT INTO event_statistics (event, event_count, unique_users, unique_items, updated_at)
    SELECT event, event_count, unique_users, unique_items, now() FROM event_totals
    ON CONFLICT (event) DO UPDATE
    SET event_count = EXCLUDED.event_count, unique_users = EXCLUDED.unique_users,
        unique_items = EXCLUDED.unique_items, updated_at = EXCLUDED.updated_at
    WHERE (event_statistics.event_count, event_statistics.unique_users, event_statistics.unique_items)
          IS DISTINCT FROM (EXCLUDED.event_count, EXCLUDED.unique_users, EXCLUDED.unique_items)
)
SELECT event, event_count, unique_users, unique_items FROM event_totals ORDER BY event
"""

# ---- asset checks ------------------------------------------------------------------------------------------
# Each takes the run's ranges as (topics[], partitions[], starts[], ends[]) arrays; with NULL arrays the
# check covers the whole table (a check executed on its own from the UI).

# The rows the check covers: those of the run's ranges, found through the source-coordinates index (a run's
# checks must not scan the whole table, which grows with every run), or all of them.
_CHECKED_ROWS = """
    (SELECT e.* FROM clickstream_events e WHERE %(topics)s::text[] IS NULL
     UNION ALL
     SELECT e.*
     FROM unnest(%(topics)s::text[], %(partitions)s::int[], %(starts)s::bigint[], %(ends)s::bigint[])
          AS r(topic, part, lo, hi)
     JOIN clickstream_events e
       ON e.kafka_topic = r.topic AND e.kafka_partition = r.part
      AND e.kafka_offset >= r.lo AND e.kafka_offset < r.hi) e
"""

# The four row rules in one pass over the checked rows: one count of violations per rule.
CHECK_ROW_RULES = (
    """
SELECT count(*) FILTER (WHERE visitorid IS NULL OR itemid IS NULL OR visitorid < 0 OR itemid < 0),
       count(*) FILTER (WHERE event NOT IN ('view', 'addtocart', 'transaction')),
       count(*) FILTER (WHERE "timestamp" < %(min_ts)s OR "timestamp" >= %(max_ts)s
                           OR event_time <> to_timestamp("timestamp" / 1000.0)),
       count(*) FILTER (WHERE (event = 'transaction') <> (transactionid IS NOT NULL) OR transactionid < 0)
FROM"""
    + _CHECKED_ROWS
)

# The unique constraint should make this impossible; the check proves the constraint is in place and held.
CHECK_DUPLICATE_COORDINATES = (
    """
SELECT count(*) FROM (
    SELECT kafka_topic, kafka_partition, kafka_offset FROM"""
    + _CHECKED_ROWS
    + """    GROUP BY 1, 2, 3 HAVING count(*) > 1
) d
"""
)

# Per ingested range: offsets in the range = rows stored + rows quarantined (offsets are contiguous:
# the producer is idempotent, not transactional, so there are no control records).
CHECK_RECONCILIATION = """
SELECT r.kafka_topic, r.kafka_partition, r.start_offset, r.end_offset,
       (SELECT count(*) FROM clickstream_events e
         WHERE e.kafka_topic = r.kafka_topic AND e.kafka_partition = r.kafka_partition
           AND e.kafka_offset >= r.start_offset AND e.kafka_offset < r.end_offset) AS stored,
       (SELECT count(*) FROM quarantine q
         WHERE q.source = 'kafka' AND q.kafka_topic = r.kafka_topic AND q.kafka_partition = r.kafka_partition
           AND q.kafka_offset >= r.start_offset AND q.kafka_offset < r.end_offset) AS quarantined
FROM ingested_ranges r
WHERE %(run_id)s::text IS NULL OR r.dagster_run_id = %(run_id)s
ORDER BY 1, 2, 3
"""

RANGES_OF_RUN = """
SELECT kafka_topic, kafka_partition, start_offset, end_offset FROM ingested_ranges WHERE dagster_run_id = %s
"""

# ---- dashboards / status -----------------------------------------------------------------------------------

QUARANTINE_BY_REASON = """
SELECT split_part(reason, ':', 1) AS kind, count(*) FROM quarantine GROUP BY 1 ORDER BY 2 DESC
"""

# ---- reference data (category_tree, item_properties, items) -----------------------------------------------

TRUNCATE_CATEGORY_TREE = "TRUNCATE category_tree"
COPY_CATEGORY_TREE = "COPY category_tree (categoryid, parentid) FROM STDIN (FORMAT BINARY)"
CATEGORY_TREE_TYPES = ("int8", "int8")

TRUNCATE_ITEM_PROPERTIES = "TRUNCATE item_properties"
COPY_ITEM_PROPERTIES = (
    'COPY item_properties ("timestamp", itemid, property, value) FROM STDIN (FORMAT BINARY)'
)
ITEM_PROPERTIES_TYPES = ("int8", "int8", "text", "text")

FORGET_CSV_QUARANTINE = "DELETE FROM quarantine WHERE source = 'csv' AND source_file = %s"
QUARANTINE_CSV_ROW = """
INSERT INTO quarantine (source, source_file, source_line, raw_payload, reason)
VALUES ('csv', %s, %s, %s, %s)
ON CONFLICT (source_file, source_line) WHERE source = 'csv' DO NOTHING
"""

CATEGORY_TREE_SUMMARY = "SELECT count(*), count(*) FILTER (WHERE parentid IS NULL) FROM category_tree"
ITEM_PROPERTIES_SUMMARY = "SELECT count(*), count(DISTINCT itemid) FROM item_properties"

# Each item's latest categoryid and available snapshot, and its category path up to the root.
REBUILD_ITEMS = """
WITH RECURSIVE paths (categoryid, next_parent, path) AS (
    SELECT categoryid, parentid, ARRAY[categoryid] FROM category_tree
    UNION ALL
    SELECT p.categoryid, c.parentid, p.path || c.categoryid
    FROM paths p JOIN category_tree c ON c.categoryid = p.next_parent
    WHERE NOT c.categoryid = ANY (p.path)
), full_paths AS (
    SELECT categoryid, path FROM paths WHERE next_parent IS NULL
), latest AS (
    SELECT DISTINCT ON (itemid, property) itemid, property, value
    FROM item_properties
    WHERE property IN ('categoryid', 'available')
    ORDER BY itemid, property, "timestamp" DESC
), current_state AS (
    SELECT itemid,
           (max(value) FILTER (WHERE property = 'categoryid'))::bigint AS categoryid,
           max(value) FILTER (WHERE property = 'available') = '1' AS available
    FROM latest GROUP BY itemid
)
INSERT INTO items (itemid, categoryid, available, category_path, updated_at)
SELECT s.itemid, s.categoryid, s.available, fp.path, now()
FROM current_state s LEFT JOIN full_paths fp ON fp.categoryid = s.categoryid
"""
TRUNCATE_ITEMS = "TRUNCATE items"
ITEMS_SUMMARY = """
SELECT count(*), count(categoryid), count(*) FILTER (WHERE available), count(category_path),
       coalesce(max(cardinality(category_path)), 0)
FROM items
"""
ITEMS_PREVIEW = "SELECT itemid, categoryid, available, category_path FROM items ORDER BY itemid LIMIT 5"
