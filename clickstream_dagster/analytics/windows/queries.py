"""Every query of the 5-minute windows: their distinct sets, the queued deltas and windowed_stats.

A window is passed to PostgreSQL as its number, start / WINDOW_MS (a batch's timestamp // WINDOW_MS); its start is
to_timestamp(number * WINDOW_SECONDS). A window set's bytes are its sorted distinct ids, 8 bytes each (int8send).
The window size comes from `analytics.windows` and is the only literal of it.
"""

from __future__ import annotations

from clickstream_dagster.analytics.windows import WINDOW_INTERVAL, WINDOW_MS, WINDOW_SECONDS

# ---- the distinct sets and the deltas a loading transaction queues (sets.py) -------------------------------

# Every stored (window, event)'s distinct visitors and items (once, to build the sets).
REBUILD_WINDOW_SETS = f"""
WITH rows AS (
    SELECT to_timestamp(("timestamp" / {WINDOW_MS}) * {WINDOW_SECONDS}) AS window_start, event, visitorid, itemid
    FROM clickstream_events
), visitors AS (
    SELECT window_start, event, string_agg(int8send(visitorid), ''::bytea ORDER BY visitorid) AS ids
    FROM (SELECT DISTINCT window_start, event, visitorid FROM rows) d
    GROUP BY 1, 2
), items AS (
    SELECT window_start, event, string_agg(int8send(itemid), ''::bytea ORDER BY itemid) AS ids
    FROM (SELECT DISTINCT window_start, event, itemid FROM rows) d
    GROUP BY 1, 2
)
INSERT INTO window_sets (window_start, event, visitors, items)
SELECT v.window_start, v.event, v.ids, i.ids FROM visitors v JOIN items i USING (window_start, event)
"""

TRUNCATE_WINDOW_SETS = "TRUNCATE window_sets"

# Closed windows: those that end more than the lateness horizon before the newest event (no event can reach
# them any more: the loader quarantines it). Their sets go; their counts in windowed_stats stay.
CLOSE_WINDOWS = f"""
DELETE FROM window_sets
WHERE window_start < to_timestamp((%(newest)s - %(horizon)s) / 1000.0) - interval '{WINDOW_SECONDS} seconds'
"""

# The stored sets of the (window, event)s a batch touches.
WINDOW_SETS_OF = f"""
SELECT k.window_number, k.event, w.visitors, w.items
FROM unnest(%(windows)s::bigint[], %(events)s::text[]) AS k(window_number, event)
JOIN window_sets w ON w.window_start = to_timestamp(k.window_number * {WINDOW_SECONDS}) AND w.event = k.event
"""

# A batch's window sets after it, with what it added to each (events, new visitors, new items).
CREATE_WINDOW_SETS_STAGING = """
CREATE TEMP TABLE staging_window_sets (
    window_number bigint, event text, events bigint, new_users bigint, new_items bigint,
    visitors bytea, items bytea
) ON COMMIT DROP
"""

COPY_WINDOW_SETS_STAGING = """
COPY staging_window_sets (window_number, event, events, new_users, new_items, visitors, items)
FROM STDIN (FORMAT BINARY)
"""

WINDOW_SETS_STAGING_TYPES = ("int8", "text", "int8", "int8", "int8", "bytea", "bytea")

DROP_WINDOW_SETS_STAGING = "DROP TABLE staging_window_sets"

UPSERT_WINDOW_SETS = f"""
INSERT INTO window_sets (window_start, event, visitors, items)
SELECT to_timestamp(window_number * {WINDOW_SECONDS}), event, visitors, items FROM staging_window_sets
ON CONFLICT (window_start, event) DO UPDATE SET visitors = EXCLUDED.visitors, items = EXCLUDED.items
"""

# The batch and its per-window deltas, queued for windowed_stats (stats.py applies them).
QUEUE_WINDOW_DELTAS = f"""
WITH batch AS (
    INSERT INTO window_change_batches (events) VALUES (%(events)s) RETURNING batch_id
)
INSERT INTO window_deltas (batch_id, window_start, event, events, new_users, new_items)
SELECT b.batch_id, to_timestamp(s.window_number * {WINDOW_SECONDS}), s.event, s.events, s.new_users, s.new_items
FROM staging_window_sets s CROSS JOIN batch b
"""

# ---- windowed_stats: the queued deltas summed by Spark and applied (stats.py) ------------------------------

# Spark SQL over the queued deltas read from PostgreSQL; `{queued}` is bound to that DataFrame by
# spark.sql(). Plain SQL rather than pyspark.sql.functions, so the same code runs on local and Spark Connect
# sessions.
WINDOW_DELTAS_SPARK_SQL = """
SELECT unix_millis(window_start)    AS window_start_ms,
       event,
       sum(events)                  AS events,
       sum(new_users)               AS users,
       sum(new_items)               AS items
FROM {queued}
GROUP BY window_start, event
"""

PENDING_BATCHES_SQL = "SELECT batch_id, events FROM window_change_batches ORDER BY batch_id"

# Exactly-once: the batches must still be queued (a second applier, or a retry after a commit, finds them gone).
TAKE_BATCHES_SQL = "DELETE FROM window_change_batches WHERE batch_id = ANY(%(batches)s::bigint[])"

DELETE_DELTAS_SQL = "DELETE FROM window_deltas WHERE batch_id = ANY(%(batches)s::bigint[])"

ADD_WINDOW_DELTAS_SQL = f"""
INSERT INTO windowed_stats AS w
    (window_start, window_end, event, event_count, unique_users, unique_items)
SELECT start, start + interval '{WINDOW_INTERVAL}', event, events, users, items
FROM unnest(%(starts)s::timestamptz[], %(events)s::text[], %(counts)s::bigint[], %(users)s::bigint[],
            %(items)s::bigint[]) AS d(start, event, events, users, items)
ON CONFLICT (window_start, event) DO UPDATE
SET event_count  = w.event_count + EXCLUDED.event_count,
    unique_users = w.unique_users + EXCLUDED.unique_users,
    unique_items = w.unique_items + EXCLUDED.unique_items,
    updated_at   = now()
"""

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

# The shape of the window query (tumbling window, exact distinct counts) on inline rows: a Spark Connect
# server pays its first-query costs with it at start-up.
WARM_UP_SPARK_SQL = f"""
SELECT window(ts, '{WINDOW_INTERVAL}') AS w, event, count(*), count(DISTINCT u), count(DISTINCT i)
FROM VALUES (TIMESTAMP'2015-06-01 00:00:00', 'view', 1L, 2L), (TIMESTAMP'2015-06-01 00:07:00', 'view', 1L, 3L)
    AS t(ts, event, u, i)
GROUP BY 1, 2
"""
