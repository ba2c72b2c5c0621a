"""Every query the pipeline runs against its own tables, in one place. Parameters are always bound (%s),
never formatted into the text. Tables themselves are created only by the migrations next to this file."""

from __future__ import annotations

# ---- raw_events: staging + idempotent insert ---------------------------------------------------------------

# The batch's window is computed by the same expression as clickstream_events.window_start.
CREATE_EVENT_STAGING = """
CREATE TEMP TABLE staging_events (
    "timestamp" bigint, visitorid bigint, event text, itemid bigint, transactionid bigint,
    produced_ms bigint, kafka_partition integer, kafka_offset bigint,
    window_start timestamptz GENERATED ALWAYS AS (to_timestamp(("timestamp" / 300000) * 300)) STORED
) ON COMMIT DROP
"""

COPY_EVENT_STAGING = """
COPY staging_events ("timestamp", visitorid, event, itemid, transactionid, produced_ms, kafka_partition,
                     kafka_offset) FROM STDIN (FORMAT BINARY)
"""

EVENT_STAGING_TYPES = ("int8", "int8", "text", "int8", "int8", "int8", "int4", "int8")

# Loading transactions take this lock after their COPY into the (private) staging table, so everything below
# runs for one batch at a time: the "already stored?" and "new pair?" probes cannot race with another
# batch's insert, and the event_totals rows are never contended.
INGEST_LOCK = "SELECT pg_advisory_xact_lock(hashtext('clickstream_ingest'))"

# A batch normally holds only new offsets: one index range probe per partition (its lowest and highest offset
# in the batch, bound as arrays) says so. Only a re-run of stored offsets pays for a per-row anti-join. (Computed
# from the staging table instead, the planner joined its per-partition bounds with a scan: 0.49 s per batch.)
STAGED_ALREADY_STORED = """
SELECT EXISTS (
    SELECT 1
    FROM unnest(%(partitions)s::int[], %(lows)s::bigint[], %(highs)s::bigint[]) AS s(part, lo, hi)
    CROSS JOIN LATERAL (
        SELECT 1 FROM clickstream_events e
        WHERE e.kafka_topic = %(topic)s AND e.kafka_partition = s.part AND e.kafka_offset BETWEEN s.lo AND s.hi
        LIMIT 1
    ) stored
)
"""

DROP_STAGED_ALREADY_STORED = """
DELETE FROM staging_events s
USING clickstream_events e
WHERE e.kafka_topic = %(topic)s AND e.kafka_partition = s.kafka_partition AND e.kafka_offset = s.kafka_offset
"""

# The "no stored row has it" tests are correlated sub-plans inside count(*) FILTER, so each is an index probe:
# written as NOT EXISTS in WHERE, the planner turns them into anti-joins and, with the batch sorted, merges
# against a scan of the whole index (measured: every stored row fetched, per batch).
# Before the batch is inserted: what it adds to each (window, event) of windowed_stats, exactly. A (window,
# event, visitor) pair is new when no stored row has it (a probe of clickstream_events_window_idx);
# over any set of batches the counts of new pairs add up to count(DISTINCT ...) per window. The batch is
# queued (window_change_batches) with its deltas (window_deltas) for windowed_stats to apply.
QUEUE_WINDOW_DELTAS = """
WITH batch AS (
    INSERT INTO window_change_batches (events)
    SELECT count(*) FROM staging_events HAVING count(*) > 0
    RETURNING batch_id
), events AS (
    SELECT window_start, event, count(*) AS n FROM staging_events GROUP BY window_start, event
), new_users AS (
    SELECT p.window_start, p.event,
           count(*) FILTER (WHERE NOT EXISTS (
               SELECT 1 FROM clickstream_events e
               WHERE e.window_start = p.window_start AND e.event = p.event AND e.visitorid = p.visitorid)) AS n
    FROM (SELECT DISTINCT window_start, event, visitorid FROM staging_events) p
    GROUP BY p.window_start, p.event
), new_items AS (
    SELECT p.window_start, p.event,
           count(*) FILTER (WHERE NOT EXISTS (
               SELECT 1 FROM clickstream_events e
               WHERE e.window_start = p.window_start AND e.event = p.event AND e.itemid = p.itemid)) AS n
    FROM (SELECT DISTINCT window_start, event, itemid FROM staging_events) p
    GROUP BY p.window_start, p.event
)
INSERT INTO window_deltas (batch_id, window_start, event, events, new_users, new_items)
SELECT b.batch_id, ev.window_start, ev.event, ev.n, coalesce(u.n, 0), coalesce(i.n, 0)
FROM events ev
CROSS JOIN batch b
LEFT JOIN new_users u ON u.window_start = ev.window_start AND u.event = ev.event
LEFT JOIN new_items i ON i.window_start = ev.window_start AND i.event = ev.event
"""

# The same deltas from one ordered pass instead of probes, for a batch that is large next to the table: the
# stored rows of the windows the batch touches (clickstream_events_window_idx, an index-only scan once VACUUM
# has marked the pages all-visible) merged with the sorted batch; per (window, event), the distinct visitors
# and items with the batch minus those without it. Measured, 100k events into 2.66M stored: 1.7 s, the probes
# 2.9-4.9 s; the probes' cost grows with the batch, this one with the table.
QUEUE_WINDOW_DELTAS_BY_SCAN = """
WITH batch AS (
    INSERT INTO window_change_batches (events)
    SELECT count(*) FROM staging_events HAVING count(*) > 0
    RETURNING batch_id
), touched AS (
    SELECT window_start, event, visitorid, itemid, false AS staged FROM clickstream_events
    UNION ALL
    SELECT window_start, event, visitorid, itemid, true FROM staging_events
), deltas AS (
    SELECT window_start, event,
           count(*) FILTER (WHERE staged) AS events,
           count(DISTINCT visitorid) - count(DISTINCT visitorid) FILTER (WHERE NOT staged) AS new_users,
           count(DISTINCT itemid) - count(DISTINCT itemid) FILTER (WHERE NOT staged) AS new_items
    FROM touched
    WHERE (window_start, event) IN (SELECT window_start, event FROM staging_events)
    GROUP BY window_start, event
)
INSERT INTO window_deltas (batch_id, window_start, event, events, new_users, new_items)
SELECT b.batch_id, d.window_start, d.event, d.events, d.new_users, d.new_items
FROM deltas d
CROSS JOIN batch b
"""

# Before the batch is inserted: per event type totals. New (event, visitor) pairs by probing
# clickstream_events_visitor_event_idx; items repeat far more, so their pairs are kept in seen_items.
ADD_EVENT_TOTALS = """
WITH new_users AS (
    SELECT p.event,
           count(*) FILTER (WHERE NOT EXISTS (
               SELECT 1 FROM clickstream_events e WHERE e.visitorid = p.visitorid AND e.event = p.event)) AS n
    FROM (SELECT DISTINCT event, visitorid FROM staging_events) p
    GROUP BY p.event
), new_items AS (
    INSERT INTO seen_items (event, itemid)
    SELECT DISTINCT event, itemid FROM staging_events ORDER BY 1, 2
    ON CONFLICT DO NOTHING
    RETURNING event
), events AS (
    SELECT event, count(*) AS n FROM staging_events GROUP BY event
)
INSERT INTO event_totals AS t (event, event_count, unique_users, unique_items)
SELECT ev.event, ev.n, coalesce(u.n, 0), (SELECT count(*) FROM new_items i WHERE i.event = ev.event)
FROM events ev LEFT JOIN new_users u ON u.event = ev.event
ON CONFLICT (event) DO UPDATE
SET event_count = t.event_count + EXCLUDED.event_count,
    unique_users = t.unique_users + EXCLUDED.unique_users,
    unique_items = t.unique_items + EXCLUDED.unique_items
"""

# The same totals for a batch that is large next to the table, after it is inserted: unique visitors per
# event type recounted from clickstream_events_visitor_event_idx (one index-only pass) instead of one probe per
# new (event, visitor) pair; items as above. Measured at 2.66M stored rows: the recount 1.1 s, the probes for
# 100k events 0.7 s.
ADD_EVENT_TOTALS_BY_SCAN = """
WITH new_items AS (
    INSERT INTO seen_items (event, itemid)
    SELECT DISTINCT event, itemid FROM staging_events ORDER BY 1, 2
    ON CONFLICT DO NOTHING
    RETURNING event
), users AS (
    SELECT event, count(*) AS n FROM (SELECT DISTINCT visitorid, event FROM clickstream_events) p GROUP BY event
), events AS (
    SELECT event, count(*) AS n FROM staging_events GROUP BY event
)
INSERT INTO event_totals AS t (event, event_count, unique_users, unique_items)
SELECT ev.event, ev.n, u.n, (SELECT count(*) FROM new_items i WHERE i.event = ev.event)
FROM events ev JOIN users u ON u.event = ev.event
ON CONFLICT (event) DO UPDATE
SET event_count = t.event_count + EXCLUDED.event_count,
    unique_users = EXCLUDED.unique_users,
    unique_items = t.unique_items + EXCLUDED.unique_items
"""

# After a batch loaded by scans: its pages marked all-visible, so the next scan reads the indexes alone
# (VACUUM visits only pages not yet all-visible; SKIP_LOCKED: never wait for autovacuum).
VACUUM_EVENTS = "VACUUM (SKIP_LOCKED) clickstream_events"

# For the passes, in the loading transaction only: read the stored rows in index order (an index-only scan
# merged with the sorted batch) rather than a sequential scan sorted or hashed afterwards, which the planner
# prefers while the table's statistics lag behind a fast-growing table (measured at 600k rows + 100k: window
# deltas 1.44 -> 1.05 s, visitor recount 1.25 -> 0.70 s).
PREFER_INDEX_PASSES = "SET LOCAL enable_seqscan = off"

# Every staged row is new here (stored ones were dropped above; the primary key would refuse a duplicate).
# Sorted by the window indexes' key: measured, random-order index inserts dominate the cost of a batch.
# event_time and produced_at use the expressions the checks use.
INSERT_EVENTS_FROM_STAGING = """
WITH ins AS (
    INSERT INTO clickstream_events ("timestamp", event_time, visitorid, event, itemid, transactionid,
                                    produced_at, kafka_topic, kafka_partition, kafka_offset)
    SELECT "timestamp", to_timestamp("timestamp"::float8 / 1000), visitorid, event, itemid, transactionid,
           CASE WHEN produced_ms > 0 THEN to_timestamp(produced_ms::float8 / 1000) END,
           %(topic)s, kafka_partition, kafka_offset
    FROM staging_events
    ORDER BY window_start, event, visitorid
    RETURNING kafka_partition
)
SELECT kafka_partition, count(*) FROM ins GROUP BY kafka_partition
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

# Rows in clickstream_events, kept exact by the loading transaction (count(*) would scan the whole table).
COUNT_EVENTS = "SELECT coalesce(sum(event_count), 0)::bigint FROM event_totals"

# ---- live_clickstream_events ------------------------------------------------------------------------------

# In a run that ingested ranges: the newest rows of those ranges (found through the source-coordinates key,
# however large clickstream_events is), within the horizon and never more than the live table may keep. Each
# range is read backwards from its end and at most max_rows deep: a range loads in offset order, so its newest
# rows are its last ones (a 500k-message run read all 500k rows to keep 50k: 2.4 s per run).
REFRESH_LIVE_EVENTS_FROM_RUN = """
INSERT INTO live_clickstream_events (kafka_topic, kafka_partition, kafka_offset, "timestamp", event_time,
                                     visitorid, event, itemid, transactionid, created_at)
SELECT e.kafka_topic, e.kafka_partition, e.kafka_offset, e."timestamp", e.event_time, e.visitorid, e.event,
       e.itemid, e.transactionid, e.created_at
FROM ingested_ranges r
CROSS JOIN LATERAL (
    SELECT * FROM clickstream_events x
    WHERE x.kafka_topic = r.kafka_topic AND x.kafka_partition = r.kafka_partition
      AND x.kafka_offset >= r.start_offset AND x.kafka_offset < r.end_offset
    ORDER BY x.kafka_offset DESC
    LIMIT %(max_rows)s  -- one backward scan of the source-coordinates key per range
) e
WHERE r.dagster_run_id = %(run_id)s AND e.created_at >= now() - make_interval(secs => %(horizon)s)
ORDER BY e.created_at DESC, e.kafka_offset DESC, e.kafka_partition DESC
LIMIT %(max_rows)s
ON CONFLICT (kafka_topic, kafka_partition, kafka_offset) DO NOTHING
"""

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

# Keeps at most N rows: the newest by ingestion time, then by offset (then partition, so ties cut the same way).
CAP_LIVE_EVENTS = """
DELETE FROM live_clickstream_events l
USING (
    SELECT kafka_topic, kafka_partition, kafka_offset FROM live_clickstream_events
    ORDER BY created_at DESC, kafka_offset DESC, kafka_partition DESC OFFSET %s
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
# The rows of the given offset ranges, each range read by one primary-key range scan. OFFSET 0 keeps the
# planner from flattening the LATERAL subquery into a join: as a join it hashed the few ranges and scanned
# the whole table (EXPLAIN ANALYZE at 250k rows: 116 ms -> 30 ms; the scan grows with the table, the range
# scans only with the run).
_CHECKED_ROWS = """
    (SELECT e.* FROM clickstream_events e WHERE %(topics)s::text[] IS NULL
     UNION ALL
     SELECT e.*
     FROM unnest(%(topics)s::text[], %(partitions)s::int[], %(starts)s::bigint[], %(ends)s::bigint[])
          AS r(topic, part, lo, hi)
     CROSS JOIN LATERAL (
         SELECT * FROM clickstream_events x
         WHERE x.kafka_topic = r.topic AND x.kafka_partition = r.part
           AND x.kafka_offset >= r.lo AND x.kafka_offset < r.hi
         OFFSET 0
     ) e) e
"""

# The four row rules in one pass over the checked rows: one count of violations per rule.
CHECK_ROW_RULES = (
    """
SELECT count(*) FILTER (WHERE visitorid IS NULL OR itemid IS NULL OR visitorid < 0 OR itemid < 0),
       count(*) FILTER (WHERE event NOT IN ('view', 'addtocart', 'transaction')),
       count(*) FILTER (WHERE "timestamp" < %(min_ts)s OR "timestamp" >= %(max_ts)s
                           OR event_time <> to_timestamp("timestamp"::float8 / 1000)),
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
