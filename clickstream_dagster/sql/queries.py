"""Every query the pipeline runs against its own tables, in one place. Parameters are always bound (%s),
never formatted into the text. Tables themselves are created only by the migrations next to this file."""

from __future__ import annotations

# ---- raw_events: idempotent load ---------------------------------------------------------------------------

# Loading transactions take this lock after their insert, to add their events to the distinct sets and the
# totals: one batch at a time, each seeing every batch committed before it. Held until commit.
INGEST_LOCK = "SELECT pg_advisory_xact_lock(hashtext('clickstream_ingest'))"

# A batch normally holds only new offsets: one index range probe per partition (its lowest and highest offset
# in the batch, bound as arrays) says so. Only a re-run of stored offsets lists them (STORED_OFFSETS). A stored
# copy of a message has the message's event time: bounded by the batch's, the probe reads only the batch's
# months, however many months are stored.
_BATCH_BOUNDS = """
    FROM unnest(%(partitions)s::int[], %(lows)s::bigint[], %(highs)s::bigint[]) AS s(part, lo, hi)
    CROSS JOIN LATERAL (
        SELECT e.kafka_partition, e.kafka_offset FROM clickstream_events e
        WHERE e.kafka_topic = %(topic)s AND e.kafka_partition = s.part AND e.kafka_offset BETWEEN s.lo AND s.hi
          AND e."timestamp" BETWEEN %(ts_lo)s AND %(ts_hi)s
        {limit}
    ) stored
"""

ANY_STORED = "SELECT EXISTS (SELECT 1" + _BATCH_BOUNDS.format(limit="LIMIT 1") + ")"

STORED_OFFSETS = "SELECT stored.kafka_partition, stored.kafka_offset" + _BATCH_BOUNDS.format(limit="")

# Straight into the table, without a staging table: the data is built by ingestion/columns.py, in this column
# order. Outside the ingest lock, so batches insert concurrently. Should another loading transaction store
# some of the same offsets meanwhile, the COPY waits for it and fails on the unique key, and `load_batch`
# leaves those out and copies again. (INSERT ... ON CONFLICT DO NOTHING from a staging table cost 8-10 us
# per row more, measured.)
COPY_EVENTS = """
COPY clickstream_events ("timestamp", event_time, visitorid, itemid, kafka_partition, kafka_offset, produced_at,
                         transactionid, event, kafka_topic) FROM STDIN (FORMAT BINARY)
"""

# ---- clickstream_events' months (migration 0017; ingestion/months.py) --------------------------------------

# Of a batch's months (partition names), those missing; where the months retention kept start (epoch ms;
# NULL while retention dropped none); and the newest event time stored (epoch ms; the lateness horizon's
# reference), read under the lock of LOADING_LOCK.
MONTHS_MISSING = """
SELECT ARRAY(SELECT n FROM unnest(%(names)s::text[]) AS n WHERE to_regclass(n) IS NULL),
       (SELECT max(to_ts) FROM dropped_event_months),
       (SELECT max(last_timestamp) FROM event_totals)
"""

# The lock every loading transaction's COPY takes anyway, taken first: retention (which drops a month under an
# exclusive lock) then never runs between a loading transaction's reading of the horizons and its insert.
LOADING_LOCK = "LOCK TABLE clickstream_events IN ROW EXCLUSIVE MODE"

# Creators of months one at a time. SHARE UPDATE EXCLUSIVE lets every read and insert of clickstream_events go
# on; taking a table lock also brings this transaction's view of the catalog up to date (a month another
# creator just committed is seen).
MONTHS_LOCK = "LOCK TABLE clickstream_events IN SHARE UPDATE EXCLUSIVE MODE"

# A month is created on its own and then attached: attaching needs only the lock above, where CREATE TABLE ...
# PARTITION OF would take an exclusive lock on clickstream_events, queueing every reader behind the loading
# transactions in flight.
CREATE_MONTH = "CREATE TABLE {month} (LIKE clickstream_events INCLUDING DEFAULTS)"
ATTACH_MONTH = "ALTER TABLE clickstream_events ATTACH PARTITION {month} FOR VALUES FROM ({lo}) TO ({hi})"

# Of the given source coordinates, those within a range of the ledger (loaded once already).
IN_LEDGER = """
SELECT s.part, s.off
FROM unnest(%(partitions)s::int[], %(offsets)s::bigint[]) AS s(part, off)
WHERE EXISTS (SELECT 1 FROM ingested_ranges r
              WHERE r.kafka_topic = %(topic)s AND r.kafka_partition = s.part
                AND r.start_offset <= s.off AND r.end_offset > s.off)
"""

# ---- retention (ingestion/retention.py) --------------------------------------------------------------------

NEWEST_EVENT_MS = "SELECT max(last_timestamp) FROM event_totals"
MONTHS = """
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'clickstream_events'::regclass ORDER BY 1
"""
# Loading transactions (LOADING_LOCK) wait while a month is counted and dropped, or closed windows' sets are
# deleted; readers do not (a DROP itself takes the exclusive lock at the end, for a moment).
HOLD_LOADING = "LOCK TABLE clickstream_events IN SHARE MODE"
RETENTION_STATE = """
SELECT (SELECT max(last_timestamp) FROM event_totals), (SELECT gap_ms FROM session_settings),
       (SELECT min(first_ms) FROM session_changes)
"""
SESSIONS_STILL_OPEN = "SELECT count(*) FROM sessions WHERE start_ms < %(before)s AND end_ms >= %(reach)s"
# A month's rows per ledger range (each row in the range that starts at or before its offset, if it ends after).
MONTH_ROWS_BY_RANGE = """
SELECT r.kafka_topic, r.kafka_partition, r.start_offset, r.end_offset, count(*)
FROM {month} e
CROSS JOIN LATERAL (
    SELECT kafka_topic, kafka_partition, start_offset, end_offset FROM ingested_ranges r
    WHERE r.kafka_topic = e.kafka_topic AND r.kafka_partition = e.kafka_partition
      AND r.start_offset <= e.kafka_offset
    ORDER BY r.start_offset DESC, r.end_offset DESC LIMIT 1
) r
WHERE r.end_offset > e.kafka_offset
GROUP BY 1, 2, 3, 4
"""
MONTH_ROWS = "SELECT count(*) FROM {month}"
ADD_ROWS_DROPPED = """
UPDATE ingested_ranges r SET rows_dropped = r.rows_dropped + s.n
FROM unnest(%(topics)s::text[], %(partitions)s::int[], %(starts)s::bigint[], %(ends)s::bigint[],
            %(counts)s::bigint[]) AS s(topic, part, lo, hi, n)
WHERE (r.kafka_topic, r.kafka_partition, r.start_offset, r.end_offset) = (s.topic, s.part, s.lo, s.hi)
"""
ADD_DROPPED_VISITOR_EVENTS = """
INSERT INTO dropped_visitor_events AS d (visitorid, events)
SELECT visitorid, count(*) FROM {month} GROUP BY visitorid
ON CONFLICT (visitorid) DO UPDATE SET events = d.events + EXCLUDED.events
"""
RECORD_DROPPED_MONTH = """
INSERT INTO dropped_event_months (partition_name, from_ts, to_ts, rows_dropped)
VALUES (%(name)s, %(from_ts)s, %(to_ts)s, %(rows)s)
"""

# ---- raw_events: the per event type sets (analytics/distinct.py; the windows' own: analytics/windows) -------

# Totals stored without their sets: loaded before migration 0007; the sets are built from the rows first.
EVENT_SETS_MISSING = "SELECT EXISTS (SELECT 1 FROM event_totals WHERE visitors IS NULL OR items IS NULL)"


EVENT_TYPES_STORED = "SELECT event FROM event_totals ORDER BY event"
DISTINCT_VISITORS_OF_EVENT = "SELECT DISTINCT visitorid FROM clickstream_events WHERE event = %s"
DISTINCT_ITEMS_OF_EVENT = "SELECT DISTINCT itemid FROM clickstream_events WHERE event = %s"

REPLACE_EVENT_SETS = """
UPDATE event_totals t
SET unique_users = s.users, unique_items = s.items, visitors = s.visitor_set, items = s.item_set
FROM unnest(%(events)s::text[], %(users)s::bigint[], %(items)s::bigint[], %(visitor_sets)s::bytea[],
            %(item_sets)s::bytea[]) AS s(event, users, items, visitor_set, item_set)
WHERE t.event = s.event
"""


EVENT_SETS = "SELECT event, visitors, items FROM event_totals"

ADD_EVENT_TOTALS = """
INSERT INTO event_totals AS t (event, event_count, unique_users, unique_items, visitors, items, last_timestamp)
SELECT * FROM unnest(%(events)s::text[], %(counts)s::bigint[], %(users)s::bigint[], %(items)s::bigint[],
                     %(visitor_sets)s::bytea[], %(item_sets)s::bytea[], %(last)s::bigint[])
ON CONFLICT (event) DO UPDATE
SET event_count = t.event_count + EXCLUDED.event_count,
    unique_users = t.unique_users + EXCLUDED.unique_users,
    unique_items = t.unique_items + EXCLUDED.unique_items,
    visitors = EXCLUDED.visitors,
    items = EXCLUDED.items,
    last_timestamp = greatest(t.last_timestamp, EXCLUDED.last_timestamp)
"""

CREATE_QUARANTINE_STAGING = """
CREATE TEMP TABLE staging_quarantine (
    kafka_partition integer, kafka_offset bigint, raw_payload bytea, reason text,
    payload_bytes integer, payload_sha256 bytea, payload_truncated boolean
) ON COMMIT DROP
"""

COPY_QUARANTINE_STAGING = """
COPY staging_quarantine (kafka_partition, kafka_offset, raw_payload, reason, payload_bytes, payload_sha256,
                        payload_truncated) FROM STDIN (FORMAT BINARY)
"""

QUARANTINE_STAGING_TYPES = ("int4", "int8", "bytea", "text", "int4", "bytea", "bool")

INSERT_QUARANTINE_FROM_STAGING = """
WITH ins AS (
    INSERT INTO quarantine (source, kafka_topic, kafka_partition, kafka_offset, raw_payload, reason,
                            payload_bytes, payload_sha256, payload_truncated)
    SELECT 'kafka', %(topic)s, kafka_partition, kafka_offset, raw_payload, reason,
           payload_bytes, payload_sha256, payload_truncated
    FROM staging_quarantine
    ON CONFLICT (kafka_topic, kafka_partition, kafka_offset) WHERE source = 'kafka' DO NOTHING
    RETURNING kafka_partition
)
SELECT kafka_partition, count(*) FROM ins GROUP BY kafka_partition
"""

# A range inside a merged stretch of the ledger (compact_ledger) was proven long ago: a late re-read of it (an
# old run re-executed) stores nothing new and is not recorded again, which would claim its offsets twice.
RECORD_INGESTED_RANGE = """
INSERT INTO ingested_ranges (kafka_topic, kafka_partition, start_offset, end_offset,
                             messages_read, rows_inserted, rows_quarantined,
                             skipped_control, skipped_aborted, skipped_compacted, lost_retention, dagster_run_id)
SELECT %(topic)s, %(partition)s, %(start)s, %(end)s, %(read)s, %(inserted)s, %(quarantined)s,
       %(control)s, %(aborted)s, %(compacted)s, %(lost)s, %(run_id)s
WHERE NOT EXISTS (
    SELECT 1 FROM (SELECT end_offset, ranges_merged FROM ingested_ranges
                   WHERE kafka_topic = %(topic)s AND kafka_partition = %(partition)s AND start_offset <= %(start)s
                   ORDER BY start_offset DESC LIMIT 1) c
    WHERE c.ranges_merged > 1 AND c.end_offset >= %(end)s)
ON CONFLICT (kafka_topic, kafka_partition, start_offset, end_offset) DO UPDATE
-- A re-read keeps the accounting of the more complete read: one after retention moved the log start finds
-- offsets gone whose rows the first read stored.
SET (messages_read, skipped_control, skipped_aborted, skipped_compacted, lost_retention) = (
        SELECT CASE WHEN keep THEN ingested_ranges.messages_read ELSE EXCLUDED.messages_read END,
               CASE WHEN keep THEN ingested_ranges.skipped_control ELSE EXCLUDED.skipped_control END,
               CASE WHEN keep THEN ingested_ranges.skipped_aborted ELSE EXCLUDED.skipped_aborted END,
               CASE WHEN keep THEN ingested_ranges.skipped_compacted ELSE EXCLUDED.skipped_compacted END,
               CASE WHEN keep THEN ingested_ranges.lost_retention ELSE EXCLUDED.lost_retention END
        FROM (SELECT EXCLUDED.lost_retention > ingested_ranges.lost_retention AS keep) k),
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


# ---- event_statistics --------------------------------------------------------------------------------------

# event_totals is maintained by the loading transaction; this publishes it (rows unchanged are left alone).
REFRESH_EVENT_STATISTICS = """
WITH totals AS (
    SELECT event, event_count, unique_users, unique_items, to_timestamp(last_timestamp / 1000.0) AS last_event_time
    FROM event_totals
), upsert AS (
    INSERT INTO event_statistics (event, event_count, unique_users, unique_items, last_event_time, updated_at)
    SELECT event, event_count, unique_users, unique_items, last_event_time, now() FROM totals
    ON CONFLICT (event) DO UPDATE
    SET event_count = EXCLUDED.event_count, unique_users = EXCLUDED.unique_users,
        unique_items = EXCLUDED.unique_items, last_event_time = EXCLUDED.last_event_time,
        updated_at = EXCLUDED.updated_at
    WHERE (event_statistics.event_count, event_statistics.unique_users, event_statistics.unique_items,
           event_statistics.last_event_time)
          IS DISTINCT FROM (EXCLUDED.event_count, EXCLUDED.unique_users, EXCLUDED.unique_items,
                            EXCLUDED.last_event_time)
)
SELECT event, event_count, unique_users, unique_items FROM totals ORDER BY event
"""

# ---- asset checks ------------------------------------------------------------------------------------------
# One pass over the rows each checked offset range holds counts everything the checks need: the rows stored
# (reconciliation), each row rule's violations, and rows with the same offset as the row before them
# (duplicated source coordinates; the unique key should make them impossible, the check proves it is in place
# and held). A range's rows are read through the source-coordinates key, in offset order, so a run's checks
# cost what the run loaded, not what the table holds, and need no sort.


# ---- the ledger proven gap-free, and self-healing ------------------------------------------------------------

# The sensor records how far it has planned each partition (its cursor) and where ingestion started there.
RECORD_PLAN = """
INSERT INTO ingestion_plan (kafka_topic, kafka_partition, first_offset, planned_to)
SELECT %(topic)s, p, o, o FROM unnest(%(partitions)s::int[], %(offsets)s::bigint[]) AS t(p, o)
ON CONFLICT (kafka_topic, kafka_partition) DO UPDATE
SET first_offset = least(ingestion_plan.first_offset, EXCLUDED.first_offset),
    planned_to = greatest(ingestion_plan.planned_to, EXCLUDED.planned_to),
    updated_at = now()
"""

# Per partition of the plan: the offsets in [first_offset, planned_to) that no ledger range covers (gaps), and
# the ledger ranges that overlap the one before them (overlaps). Ranges are walked in start order; a range
# starting past the furthest end so far leaves a gap, one starting before it overlaps.
LEDGER_SPANS = """
WITH ranges AS (
    SELECT p.kafka_topic, p.kafka_partition, p.first_offset, p.planned_to, r.start_offset, r.end_offset,
           max(r.end_offset) OVER (PARTITION BY p.kafka_topic, p.kafka_partition ORDER BY r.start_offset, r.end_offset
                                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS covered_to
    FROM ingestion_plan p
    JOIN ingested_ranges r ON r.kafka_topic = p.kafka_topic AND r.kafka_partition = p.kafka_partition
    WHERE p.kafka_topic = %(topic)s
), edges AS (
    -- before the first range, between ranges, after the last one
    SELECT kafka_topic, kafka_partition, coalesce(covered_to, first_offset) AS gap_start, start_offset AS gap_end
    FROM ranges
    UNION ALL
    SELECT p.kafka_topic, p.kafka_partition, coalesce(max(r.end_offset), p.first_offset), p.planned_to
    FROM ingestion_plan p
    LEFT JOIN ingested_ranges r ON r.kafka_topic = p.kafka_topic AND r.kafka_partition = p.kafka_partition
    WHERE p.kafka_topic = %(topic)s
    GROUP BY p.kafka_topic, p.kafka_partition, p.first_offset, p.planned_to
)
SELECT kafka_topic AS topic, kafka_partition AS partition, 'gap' AS kind,
       greatest(gap_start, 0) AS start, gap_end AS "end"
FROM edges WHERE gap_end > gap_start
UNION ALL
SELECT kafka_topic, kafka_partition, 'overlap', start_offset, least(end_offset, covered_to)
FROM ranges WHERE start_offset < covered_to
ORDER BY 1, 2, 4
"""

PLANNED_TOPICS = "SELECT DISTINCT kafka_topic FROM ingestion_plan"

# ---- the ledger's checkpoints (ingestion.ledger.compact_ledger) ----------------------------------------------
COMPACTION_LOCK = "SELECT pg_advisory_xact_lock(hashtext('ledger compaction'))"
PLANNED_PARTITIONS = "SELECT kafka_partition FROM ingestion_plan WHERE kafka_topic = %s ORDER BY 1"
# A partition's ledger from its start: the checkpoint (its first row) and the ranges recorded after it, locked
# until the merge commits. Read into ingestion.ledger.LedgerRow.
LEDGER_HEAD = """
SELECT start_offset AS start, end_offset AS "end", messages_read AS read, rows_inserted AS inserted,
       rows_quarantined AS quarantined, skipped_control + skipped_aborted + skipped_compacted AS skipped,
       lost_retention AS lost, ingested_at < now() - make_interval(secs => %(min_age)s) AS settled
FROM ingested_ranges
WHERE kafka_topic = %(topic)s AND kafka_partition = %(partition)s
ORDER BY start_offset, end_offset
LIMIT %(limit)s
FOR UPDATE
"""
# One stretch of contiguous rows replaced by a row with their sums.
MERGE_RANGES = """
WITH gone AS (
    DELETE FROM ingested_ranges
    WHERE kafka_topic = %(topic)s AND kafka_partition = %(partition)s
      AND (start_offset, end_offset) IN (SELECT * FROM unnest(%(starts)s::bigint[], %(ends)s::bigint[]))
    RETURNING *
)
INSERT INTO ingested_ranges (kafka_topic, kafka_partition, start_offset, end_offset, messages_read,
                             rows_inserted, rows_quarantined, skipped_control, skipped_aborted,
                             skipped_compacted, lost_retention, ranges_merged, rows_dropped, dagster_run_id,
                             ingested_at)
SELECT %(topic)s, %(partition)s, min(start_offset), max(end_offset), sum(messages_read), sum(rows_inserted),
       sum(rows_quarantined), sum(skipped_control), sum(skipped_aborted), sum(skipped_compacted),
       sum(lost_retention), sum(ranges_merged), sum(rows_dropped), NULL, max(ingested_at)
FROM gone
RETURNING ranges_merged
"""

REPAIR_ATTEMPTS = """
SELECT kafka_partition, start_offset, end_offset, attempts, extract(epoch FROM now() - last_attempt_at)
FROM ingestion_repairs WHERE kafka_topic = %s
"""

RECORD_REPAIR_ATTEMPT = """
INSERT INTO ingestion_repairs AS r (kafka_topic, kafka_partition, start_offset, end_offset, attempts,
                                    last_run_key, last_attempt_at)
VALUES (%(topic)s, %(partition)s, %(start)s, %(end)s, %(attempt)s, %(run_key)s, now())
ON CONFLICT (kafka_topic, kafka_partition, start_offset, end_offset) DO UPDATE
SET attempts = greatest(r.attempts, EXCLUDED.attempts), last_run_key = EXCLUDED.last_run_key,
    last_attempt_at = EXCLUDED.last_attempt_at
"""

RANGES_OF_RUN = """
SELECT kafka_topic, kafka_partition, start_offset, end_offset FROM ingested_ranges WHERE dagster_run_id = %s
"""

# ---- dashboards / status -----------------------------------------------------------------------------------

QUARANTINE_BY_REASON = """
SELECT split_part(reason, ':', 1) AS kind, count(*) FROM quarantine WHERE replayed_at IS NULL
GROUP BY 1 ORDER BY 2 DESC
"""

# ---- quarantine replay (ingestion/quarantine_replay.py) -------------------------------------------------------

# Repaired rows not replayed yet (nor failed with this repair), oldest first; locked, so concurrent replays
# take different rows.
PENDING_REPAIRS = """
SELECT id, kafka_topic, kafka_partition, kafka_offset, repaired_payload,
       (extract(epoch FROM quarantined_at) * 1000)::bigint AS produced_ms
FROM quarantine
WHERE source = 'kafka' AND repaired_payload IS NOT NULL AND replayed_at IS NULL AND replay_error IS NULL
  AND id > %(after)s
  AND (%(reason)s::text IS NULL OR split_part(reason, ':', 1) = %(reason)s)
  AND (%(topic)s::text IS NULL OR kafka_topic = %(topic)s)
  AND (%(partition)s::int IS NULL OR kafka_partition = %(partition)s)
  AND (cardinality(%(ids)s::bigint[]) = 0 OR id = ANY(%(ids)s::bigint[]))
ORDER BY id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""

MARK_REPLAYED = """
UPDATE quarantine SET replayed_at = now(), replay_run_id = %(run_id)s WHERE id = ANY(%(ids)s::bigint[])
"""

MARK_REPLAY_FAILED = """
UPDATE quarantine SET replay_error = e.reason
FROM unnest(%(ids)s::bigint[], %(reasons)s::text[]) AS e(id, reason) WHERE quarantine.id = e.id
"""

# What `clickstream quarantine replay --dry-run` and the job's metadata show: rows by state and kind.
QUARANTINE_STATES = """
SELECT split_part(reason, ':', 1) AS kind,
       count(*) FILTER (WHERE replayed_at IS NULL AND repaired_payload IS NULL) AS waiting_for_repair,
       count(*) FILTER (WHERE replayed_at IS NULL AND repaired_payload IS NOT NULL AND replay_error IS NULL)
           AS repaired,
       count(*) FILTER (WHERE replay_error IS NOT NULL AND replayed_at IS NULL) AS repair_invalid,
       count(*) FILTER (WHERE replayed_at IS NOT NULL) AS replayed
FROM quarantine WHERE source = 'kafka'
GROUP BY 1 ORDER BY 1
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

# Housekeeping: quarantine rows replayed more than N days ago (their events are stored under the same source
# coordinates; the ledger keeps the counts).
PRUNE_REPLAYED_QUARANTINE = """
DELETE FROM quarantine WHERE replayed_at < now() - %(days)s * interval '1 day'
"""

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
