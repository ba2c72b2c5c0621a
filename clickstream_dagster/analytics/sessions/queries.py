"""Every query of the sessions step (`update`): take the queue, widen it to spans, recompute the sessions in
them, and add the difference to every aggregate. Each runs in the step's one transaction; the s_* tables are
temporary and dropped at its commit.

Times are epoch ms; a period's start is `'epoch' + (ms / period) * period` (exact integer arithmetic, UTC),
a week's Monday is day - (day + 3) % 7 (1970-01-01 was a Thursday).
"""

from __future__ import annotations

LOCK = "SELECT pg_advisory_xact_lock(hashtext('sessions'))"
# A step reads few rows of large tables by their keys: with the default random_page_cost (4, for spinning
# disks) the planner prefers a scan of the whole table once a step touches a few thousand visitors, and the
# step's cost then grows with the history (bench shoppers: 3.3x for a 10x history). 1.1 is the usual value
# for SSDs and cached data; large backlogs still get hash joins where they are cheaper.
PLANNER = "SET LOCAL random_page_cost = 1.1"

# Reads of the large tables go through `CROSS JOIN LATERAL (... OFFSET 0)`: per touched visitor, an index
# scan of their rows. Without OFFSET 0 PostgreSQL may flatten the subquery into a hash join that scans the
# whole table, and on statistics it lacks (a table no autovacuum has analyzed yet) it does: the step's cost
# then grows with the history. Rows found so are deleted by their ctid (a TID scan, no join): the step holds
# the sessions lock, so nothing else changes these tables meanwhile.
# The applier's turn (`apply_queued`): held across its steps, never waited for.
TRY_APPLIER_LOCK = "SELECT pg_try_advisory_lock(hashtext('sessions applier'))"
APPLIER_UNLOCK = "SELECT pg_advisory_unlock(hashtext('sessions applier'))"
ANY_QUEUED = "SELECT EXISTS (SELECT 1 FROM session_changes)"
# The queue's head (update.QueueHead): what waits, since when (as epoch microseconds), and for how long.
QUEUE_HEAD = """
SELECT count(*) AS spans,
       (extract(epoch FROM min(queued_at)) * 1000000)::bigint AS oldest_us,
       coalesce(extract(epoch FROM now() - min(queued_at)), 0)::float8 AS waited_s
FROM session_changes
"""

# A session's funnel flags (1 viewed, 2 added to cart, 4 bought) from its counts.
# (PostgreSQL gives | and << the same precedence, left to right: hence the parentheses.)
_FLAGS = "((views > 0)::int | ((addtocarts > 0)::int << 1) | ((transactions > 0)::int << 2))"
_GRAINS = "(VALUES ('hour', 3600000::bigint), ('day', 86400000::bigint)) AS g(grain, ms)"
_PERIOD = "'epoch'::timestamptz + (x.start_ms / g.ms) * g.ms * interval '1 ms'"
_WEEK = "(date '1970-01-01' + (start_ms / 86400000 - (start_ms / 86400000 + 3) % 7)::int)"


STORED_GAP = "SELECT gap_ms FROM session_settings"
# Months of events retention dropped: sessions can no longer be computed again from every event.
EVENTS_DROPPED = "SELECT EXISTS (SELECT 1 FROM dropped_event_months)"

# A new gap: every stored session and aggregate goes, and every visitor's whole span is queued.
RESET_FOR_GAP = """
UPDATE session_totals SET sessions = 0, events = 0;
TRUNCATE sessions, session_items, session_changes, funnel_counts, session_lengths, item_funnel_counts,
         item_funnel_totals, category_funnel_counts, visitor_weeks, retention_counts, cohort_sessions;
INSERT INTO session_changes (visitorid, first_ms, last_ms)
SELECT visitorid, min("timestamp"), max("timestamp") FROM clickstream_events GROUP BY visitorid;
"""

SET_GAP = """
INSERT INTO session_settings (one, gap_ms) VALUES (true, %(gap)s)
ON CONFLICT (one) DO UPDATE SET gap_ms = EXCLUDED.gap_ms
"""

# ---- what to recompute ------------------------------------------------------------------------------------

TAKE_CHANGES = """
CREATE TEMP TABLE s_changes ON COMMIT DROP AS
SELECT visitorid, first_ms, last_ms FROM session_changes WITH NO DATA;
WITH taken AS (DELETE FROM session_changes RETURNING visitorid, first_ms, last_ms)
INSERT INTO s_changes SELECT visitorid, first_ms, last_ms FROM taken;
ANALYZE s_changes;
"""

# Each queued span with the stored sessions within a gap of it (those starting in [first - gap, last + gap],
# and the one before that if it reaches in), merged per visitor wherever two are within a gap of each other.
SPANS = """
CREATE TEMP TABLE s_spans ON COMMIT DROP AS
WITH intervals AS (
    SELECT visitorid, first_ms AS lo, last_ms AS hi FROM s_changes
    UNION
    SELECT s.visitorid, s.start_ms, s.end_ms
    FROM s_changes c
    CROSS JOIN LATERAL (
        SELECT visitorid, start_ms, end_ms FROM sessions
        WHERE visitorid = c.visitorid AND start_ms BETWEEN c.first_ms - %(gap)s AND c.last_ms + %(gap)s
        OFFSET 0
    ) s
    UNION
    SELECT s.visitorid, s.start_ms, s.end_ms
    FROM s_changes c
    CROSS JOIN LATERAL (
        SELECT start_ms, end_ms, visitorid FROM sessions
        WHERE visitorid = c.visitorid AND start_ms < c.first_ms - %(gap)s
        ORDER BY start_ms DESC LIMIT 1
    ) s
    WHERE s.end_ms >= c.first_ms - %(gap)s
), reach AS (
    SELECT visitorid, lo, hi,
           max(hi) OVER (PARTITION BY visitorid ORDER BY lo, hi
                         ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reached
    FROM intervals
), islands AS (
    SELECT visitorid, lo, hi,
           count(*) FILTER (WHERE reached IS NULL OR lo > reached + %(gap)s)
               OVER (PARTITION BY visitorid ORDER BY lo, hi ROWS UNBOUNDED PRECEDING) AS island
    FROM reach
)
SELECT visitorid, min(lo) AS lo, max(hi) AS hi FROM islands GROUP BY visitorid, island;
ANALYZE s_spans;
"""

# The stored sessions that start in a span go, with their items; the old rows are kept to subtract them.
REMOVE_OLD = f"""
CREATE TEMP TABLE s_old_rows ON COMMIT DROP AS
SELECT s.* FROM s_spans p
CROSS JOIN LATERAL (
    SELECT ctid AS row_id, * FROM sessions WHERE visitorid = p.visitorid AND start_ms BETWEEN p.lo AND p.hi OFFSET 0
) s;
DELETE FROM sessions WHERE ctid = ANY (ARRAY(SELECT row_id FROM s_old_rows));
ALTER TABLE s_old_rows DROP COLUMN row_id;
ALTER TABLE s_old_rows RENAME TO s_old;
ANALYZE s_old;
CREATE TEMP TABLE s_old_item_rows ON COMMIT DROP AS
SELECT i.* FROM s_old o
CROSS JOIN LATERAL (
    SELECT ctid AS row_id, * FROM session_items WHERE visitorid = o.visitorid AND start_ms = o.start_ms OFFSET 0
) i;
DELETE FROM session_items WHERE ctid = ANY (ARRAY(SELECT row_id FROM s_old_item_rows));
ALTER TABLE s_old_item_rows DROP COLUMN row_id;
ALTER TABLE s_old_item_rows RENAME TO s_old_items;
ANALYZE s_old_items;

-- What stays of the touched visitors' sessions (the sessions this step neither removes nor writes): their
-- flags per session and per item, for the visitor counts of the periods, items and categories.
CREATE TEMP TABLE s_visitors ON COMMIT DROP AS SELECT DISTINCT visitorid FROM s_spans;
ANALYZE s_visitors;
CREATE TEMP TABLE s_other_sessions ON COMMIT DROP AS
SELECT s.visitorid, s.start_ms, s.flags FROM s_visitors v
CROSS JOIN LATERAL (
    SELECT visitorid, start_ms, {_FLAGS} AS flags FROM sessions WHERE visitorid = v.visitorid OFFSET 0
) s;
CREATE TEMP TABLE s_other_items ON COMMIT DROP AS
SELECT i.visitorid, i.itemid, coalesce(i.categoryid, -1) AS categoryid, i.flags FROM s_visitors v
CROSS JOIN LATERAL (
    SELECT visitorid, itemid, categoryid, flags FROM session_items WHERE visitorid = v.visitorid OFFSET 0
) i;
"""

# The stored events in the spans, each with its session's start: a session opens at an event more than a
# gap after the visitor's previous one (events of the same millisecond are always in one session).
SESSIONIZE = """
CREATE TEMP TABLE s_events ON COMMIT DROP AS
WITH spanned AS (
    SELECT e.visitorid, e."timestamp" AS ts, e.itemid,
           CASE e.event WHEN 'view' THEN 0 WHEN 'addtocart' THEN 1 ELSE 2 END AS step
    FROM s_spans p
    CROSS JOIN LATERAL (
        SELECT visitorid, "timestamp", itemid, event FROM clickstream_events
        WHERE visitorid = p.visitorid AND "timestamp" BETWEEN p.lo AND p.hi  -- (only the span's months)
        OFFSET 0
    ) e
), marked AS (
    SELECT *, coalesce(ts - lag(ts) OVER (PARTITION BY visitorid ORDER BY ts) > %(gap)s, true) AS opens
    FROM spanned
)
SELECT visitorid, ts, itemid, step,
       max(ts) FILTER (WHERE opens) OVER (PARTITION BY visitorid ORDER BY ts RANGE UNBOUNDED PRECEDING)
           AS start_ms
FROM marked;
ANALYZE s_events;

CREATE TEMP TABLE s_new ON COMMIT DROP AS
SELECT visitorid, start_ms, max(ts) AS end_ms,
       'epoch'::timestamptz + start_ms * interval '1 ms'  AS session_start,
       'epoch'::timestamptz + max(ts) * interval '1 ms'   AS session_end,
       max(ts) - start_ms                                 AS duration_ms,
       count(*)::int                                      AS events,
       (count(*) FILTER (WHERE step = 0))::int            AS views,
       (count(*) FILTER (WHERE step = 1))::int            AS addtocarts,
       (count(*) FILTER (WHERE step = 2))::int            AS transactions,
       count(DISTINCT itemid)::int                        AS distinct_items,
       (array_agg(itemid ORDER BY ts, step, itemid))[1]   AS entry_itemid,
       (array_agg(itemid ORDER BY ts DESC, step DESC, itemid DESC))[1] AS exit_itemid,
       count(*) = 1                                       AS bounced,
       count(*) FILTER (WHERE step = 2) > 0               AS converted,
       count(*) FILTER (WHERE step = 1) > 0 AND count(*) FILTER (WHERE step = 2) = 0 AS cart_abandoned
FROM s_events GROUP BY visitorid, start_ms;
ANALYZE s_new;

CREATE TEMP TABLE s_new_items ON COMMIT DROP AS
SELECT e.visitorid, e.start_ms, e.itemid, i.categoryid, bit_or(1 << e.step)::smallint AS flags
FROM s_events e LEFT JOIN items i ON i.itemid = e.itemid
GROUP BY e.visitorid, e.start_ms, e.itemid, i.categoryid;
ANALYZE s_new_items;
"""

# ---- the differences, computed before the new sessions are written (the "other" sessions of a visitor are
# then exactly those this step did not touch) ------------------------------------------------------------

FUNNEL_DELTAS = f"""
CREATE TEMP TABLE s_funnel ON COMMIT DROP AS
WITH x AS (
    SELECT visitorid, start_ms, {_FLAGS} AS flags, bounced::int AS bounced, -1 AS sign FROM s_old
    UNION ALL
    SELECT visitorid, start_ms, {_FLAGS}, bounced::int, 1 FROM s_new
), by_session AS (
    SELECT g.grain, {_PERIOD} AS period_start, x.flags, sum(x.sign) AS sessions,
           sum(x.sign * x.bounced) AS bounced, 0 AS visitors
    FROM x CROSS JOIN {_GRAINS}
    GROUP BY 1, 2, 3
), keys AS (
    SELECT g.grain, g.ms, x.visitorid, (x.start_ms / g.ms) * g.ms AS p,
           bit_or(x.flags) FILTER (WHERE x.sign < 0) AS old_flags,
           bit_or(x.flags) FILTER (WHERE x.sign > 0) AS new_flags
    FROM x CROSS JOIN {_GRAINS}
    GROUP BY 1, 2, 3, 4
), other AS (
    SELECT g.grain, o.visitorid, (o.start_ms / g.ms) * g.ms AS p, bit_or(o.flags) AS other_flags
    FROM s_other_sessions o CROSS JOIN {_GRAINS}
    GROUP BY 1, 2, 3
), visitor_flags AS (
    SELECT k.grain, k.p, k.old_flags, k.new_flags, o.other_flags
    FROM keys k LEFT JOIN other o USING (grain, visitorid, p)
), by_visitor AS (
    SELECT grain, 'epoch'::timestamptz + p * interval '1 ms' AS period_start, flags, 0 AS sessions,
           0 AS bounced, sum(sign) AS visitors
    FROM (
        SELECT grain, p, coalesce(other_flags, 0) | coalesce(old_flags, 0) AS flags, -1 AS sign
        FROM visitor_flags WHERE other_flags IS NOT NULL OR old_flags IS NOT NULL
        UNION ALL
        SELECT grain, p, coalesce(other_flags, 0) | coalesce(new_flags, 0), 1
        FROM visitor_flags WHERE other_flags IS NOT NULL OR new_flags IS NOT NULL
    ) d
    GROUP BY 1, 2, 3
)
SELECT grain, period_start, flags::smallint AS flags, sum(sessions)::bigint AS sessions,
       sum(bounced)::bigint AS bounced, sum(visitors)::bigint AS visitors
FROM (SELECT * FROM by_session UNION ALL SELECT * FROM by_visitor) d
GROUP BY 1, 2, 3;
"""

LENGTH_DELTAS = """
CREATE TEMP TABLE s_lengths ON COMMIT DROP AS
SELECT 'epoch'::timestamptz + (start_ms / 3600000) * 3600000 * interval '1 ms' AS hour_start, duration_ms,
       sum(sign)::bigint AS sessions
FROM (SELECT start_ms, duration_ms, -1 AS sign FROM s_old UNION ALL SELECT start_ms, duration_ms, 1 FROM s_new) x
GROUP BY 1, 2;
"""


# Per item and per category (-1: unknown): sessions by the flags of what they did with it, and visitors by
# the flags of all their sessions with it.
def _deltas_by(table: str, key: str) -> str:
    """The differences per `key` (itemid or categoryid) into `table`: sessions by the flags of what they did
    with it (a category counted once per session), visitors by the flags of all their sessions with it."""
    return f"""
CREATE TEMP TABLE {table} ON COMMIT DROP AS
WITH session_flags AS (
    SELECT visitorid, start_ms, {key}, sign, bit_or(flags) AS flags FROM s_item_rows GROUP BY 1, 2, 3, 4
), by_session AS (
    SELECT {key}, flags, sum(sign) AS sessions, 0 AS visitors FROM session_flags GROUP BY 1, 2
), keys AS (
    SELECT visitorid, {key},
           bit_or(flags) FILTER (WHERE sign < 0) AS old_flags, bit_or(flags) FILTER (WHERE sign > 0) AS new_flags
    FROM s_item_rows GROUP BY 1, 2
), other AS (
    SELECT visitorid, {key}, bit_or(flags) AS other_flags FROM s_other_items GROUP BY 1, 2
), visitor_flags AS (
    SELECT k.{key}, k.old_flags, k.new_flags, o.other_flags
    FROM keys k LEFT JOIN other o USING (visitorid, {key})
), by_visitor AS (
    SELECT {key}, coalesce(other_flags, 0) | coalesce(old_flags, 0) AS flags, 0 AS sessions, -1 AS visitors
    FROM visitor_flags WHERE other_flags IS NOT NULL OR old_flags IS NOT NULL
    UNION ALL
    SELECT {key}, coalesce(other_flags, 0) | coalesce(new_flags, 0), 0, 1
    FROM visitor_flags WHERE other_flags IS NOT NULL OR new_flags IS NOT NULL
)
SELECT {key}, flags::smallint AS flags, sum(sessions)::bigint AS sessions, sum(visitors)::bigint AS visitors
FROM (SELECT * FROM by_session UNION ALL SELECT * FROM by_visitor) d
GROUP BY 1, 2;
"""


ITEM_DELTAS = f"""
CREATE TEMP TABLE s_item_rows ON COMMIT DROP AS
SELECT visitorid, start_ms, itemid, coalesce(categoryid, -1) AS categoryid, flags, -1 AS sign FROM s_old_items
UNION ALL
SELECT visitorid, start_ms, itemid, coalesce(categoryid, -1), flags, 1 FROM s_new_items;
ANALYZE s_item_rows;

{_deltas_by("s_items", "itemid")}
{_deltas_by("s_categories", "categoryid")}
"""

# Retention: each touched visitor's sessions per week before and after; a visitor adds 1 to (cohort, weeks
# after) for every week they were active, and their sessions (all but the first: returning) to the cohort.
RETENTION_DELTAS = f"""
CREATE TEMP TABLE s_weeks_before ON COMMIT DROP AS
SELECT w.visitorid, w.week_start, w.sessions, w.row_id FROM s_visitors v
CROSS JOIN LATERAL (
    SELECT visitorid, week_start, sessions, ctid AS row_id FROM visitor_weeks WHERE visitorid = v.visitorid OFFSET 0
) w;

CREATE TEMP TABLE s_weeks_after ON COMMIT DROP AS
SELECT visitorid, week_start, sum(sessions)::int AS sessions
FROM (
    SELECT visitorid, week_start, sessions FROM s_weeks_before
    UNION ALL SELECT visitorid, {_WEEK}, -1 FROM s_old
    UNION ALL SELECT visitorid, {_WEEK}, 1 FROM s_new
) x
GROUP BY 1, 2 HAVING sum(sessions) <> 0;

CREATE TEMP TABLE s_retention ON COMMIT DROP AS
WITH states AS (
    SELECT visitorid, week_start, sessions, -1 AS sign FROM s_weeks_before
    UNION ALL SELECT visitorid, week_start, sessions, 1 FROM s_weeks_after
), cohorts AS (
    SELECT *, min(week_start) OVER (PARTITION BY visitorid, sign) AS cohort_week FROM states
)
SELECT cohort_week, (week_start - cohort_week) / 7 AS weeks_after, sum(sign)::bigint AS visitors
FROM cohorts GROUP BY 1, 2;

CREATE TEMP TABLE s_cohort_sessions ON COMMIT DROP AS
WITH states AS (
    SELECT visitorid, week_start, sessions, -1 AS sign FROM s_weeks_before
    UNION ALL SELECT visitorid, week_start, sessions, 1 FROM s_weeks_after
), per_visitor AS (
    SELECT visitorid, sign, min(week_start) AS cohort_week, sum(sessions) AS sessions
    FROM states GROUP BY 1, 2
)
SELECT cohort_week, sum(sign * sessions)::bigint AS sessions,
       sum(sign * (sessions - 1))::bigint AS returning_sessions
FROM per_visitor GROUP BY 1;
"""

# ---- write: the new sessions, and every difference added ---------------------------------------------------

WRITE = """
INSERT INTO sessions SELECT * FROM s_new;
UPDATE session_totals
SET sessions = sessions + (SELECT count(*) FROM s_new) - (SELECT count(*) FROM s_old),
    events = events + (SELECT coalesce(sum(events), 0) FROM s_new) - (SELECT coalesce(sum(events), 0) FROM s_old);
INSERT INTO session_items (visitorid, start_ms, itemid, categoryid, flags)
SELECT visitorid, start_ms, itemid, categoryid, flags FROM s_new_items;

INSERT INTO funnel_counts AS f (grain, period_start, flags, sessions, bounced, visitors)
SELECT grain, period_start, flags, sessions, bounced, visitors FROM s_funnel
ON CONFLICT (grain, period_start, flags) DO UPDATE
SET sessions = f.sessions + EXCLUDED.sessions, bounced = f.bounced + EXCLUDED.bounced,
    visitors = f.visitors + EXCLUDED.visitors;
DELETE FROM funnel_counts WHERE ctid = ANY (ARRAY(
    SELECT f.ctid FROM s_funnel d CROSS JOIN LATERAL (
        SELECT ctid FROM funnel_counts
        WHERE (grain, period_start, flags) = (d.grain, d.period_start, d.flags)
          AND sessions = 0 AND bounced = 0 AND visitors = 0 OFFSET 0
    ) f));

INSERT INTO session_lengths AS l (hour_start, duration_ms, sessions)
SELECT hour_start, duration_ms, sessions FROM s_lengths
ON CONFLICT (hour_start, duration_ms) DO UPDATE SET sessions = l.sessions + EXCLUDED.sessions;
DELETE FROM session_lengths WHERE ctid = ANY (ARRAY(
    SELECT l.ctid FROM s_lengths d CROSS JOIN LATERAL (
        SELECT ctid FROM session_lengths
        WHERE (hour_start, duration_ms) = (d.hour_start, d.duration_ms) AND sessions = 0 OFFSET 0
    ) l));

INSERT INTO item_funnel_counts AS c (itemid, flags, sessions, visitors)
SELECT itemid, flags, sessions, visitors FROM s_items
ON CONFLICT (itemid, flags) DO UPDATE
SET sessions = c.sessions + EXCLUDED.sessions, visitors = c.visitors + EXCLUDED.visitors;
DELETE FROM item_funnel_counts WHERE ctid = ANY (ARRAY(
    SELECT c.ctid FROM s_items d CROSS JOIN LATERAL (
        SELECT ctid FROM item_funnel_counts
        WHERE (itemid, flags) = (d.itemid, d.flags) AND sessions = 0 AND visitors = 0 OFFSET 0
    ) c));

-- The per item totals (item_funnel_totals) of the items touched, summed again from their counts above.
CREATE TEMP TABLE s_touched_items ON COMMIT DROP AS SELECT DISTINCT itemid FROM s_items;
INSERT INTO item_funnel_totals AS t
SELECT d.itemid, a.sessions_viewed, a.sessions_carted, a.sessions_bought, a.sessions_viewed_carted,
       a.sessions_carted_bought, a.sessions_viewed_bought, a.visitors_viewed, a.visitors_carted, a.visitors_bought
FROM s_touched_items d
CROSS JOIN LATERAL (
    SELECT coalesce(sum(sessions) FILTER (WHERE flags & 1 = 1), 0) AS sessions_viewed,
           coalesce(sum(sessions) FILTER (WHERE flags & 2 = 2), 0) AS sessions_carted,
           coalesce(sum(sessions) FILTER (WHERE flags & 4 = 4), 0) AS sessions_bought,
           coalesce(sum(sessions) FILTER (WHERE flags & 3 = 3), 0) AS sessions_viewed_carted,
           coalesce(sum(sessions) FILTER (WHERE flags & 6 = 6), 0) AS sessions_carted_bought,
           coalesce(sum(sessions) FILTER (WHERE flags & 5 = 5), 0) AS sessions_viewed_bought,
           coalesce(sum(visitors) FILTER (WHERE flags & 1 = 1), 0) AS visitors_viewed,
           coalesce(sum(visitors) FILTER (WHERE flags & 2 = 2), 0) AS visitors_carted,
           coalesce(sum(visitors) FILTER (WHERE flags & 4 = 4), 0) AS visitors_bought,
           count(*) AS kept
    FROM item_funnel_counts WHERE itemid = d.itemid
) a
WHERE a.kept > 0
ON CONFLICT (itemid) DO UPDATE
SET sessions_viewed = EXCLUDED.sessions_viewed, sessions_carted = EXCLUDED.sessions_carted,
    sessions_bought = EXCLUDED.sessions_bought, sessions_viewed_carted = EXCLUDED.sessions_viewed_carted,
    sessions_carted_bought = EXCLUDED.sessions_carted_bought,
    sessions_viewed_bought = EXCLUDED.sessions_viewed_bought, visitors_viewed = EXCLUDED.visitors_viewed,
    visitors_carted = EXCLUDED.visitors_carted, visitors_bought = EXCLUDED.visitors_bought;
DELETE FROM item_funnel_totals t USING s_touched_items d
WHERE t.itemid = d.itemid AND NOT EXISTS (SELECT 1 FROM item_funnel_counts c WHERE c.itemid = d.itemid);

INSERT INTO category_funnel_counts AS c (categoryid, flags, sessions, visitors)
SELECT categoryid, flags, sessions, visitors FROM s_categories
ON CONFLICT (categoryid, flags) DO UPDATE
SET sessions = c.sessions + EXCLUDED.sessions, visitors = c.visitors + EXCLUDED.visitors;
DELETE FROM category_funnel_counts WHERE ctid = ANY (ARRAY(
    SELECT c.ctid FROM s_categories d CROSS JOIN LATERAL (
        SELECT ctid FROM category_funnel_counts
        WHERE (categoryid, flags) = (d.categoryid, d.flags) AND sessions = 0 AND visitors = 0 OFFSET 0
    ) c));

DELETE FROM visitor_weeks WHERE ctid = ANY (ARRAY(SELECT row_id FROM s_weeks_before));
INSERT INTO visitor_weeks (visitorid, week_start, sessions)
SELECT visitorid, week_start, sessions FROM s_weeks_after;

INSERT INTO retention_counts AS r (cohort_week, weeks_after, visitors)
SELECT cohort_week, weeks_after, visitors FROM s_retention
ON CONFLICT (cohort_week, weeks_after) DO UPDATE SET visitors = r.visitors + EXCLUDED.visitors;
DELETE FROM retention_counts WHERE ctid = ANY (ARRAY(
    SELECT r.ctid FROM s_retention d CROSS JOIN LATERAL (
        SELECT ctid FROM retention_counts
        WHERE (cohort_week, weeks_after) = (d.cohort_week, d.weeks_after) AND visitors = 0 OFFSET 0
    ) r));

INSERT INTO cohort_sessions AS c (cohort_week, sessions, returning_sessions)
SELECT cohort_week, sessions, returning_sessions FROM s_cohort_sessions
ON CONFLICT (cohort_week) DO UPDATE
SET sessions = c.sessions + EXCLUDED.sessions, returning_sessions = c.returning_sessions + EXCLUDED.returning_sessions;
DELETE FROM cohort_sessions WHERE ctid = ANY (ARRAY(
    SELECT c.ctid FROM s_cohort_sessions d CROSS JOIN LATERAL (
        SELECT ctid FROM cohort_sessions
        WHERE cohort_week = d.cohort_week AND sessions = 0 AND returning_sessions = 0 OFFSET 0
    ) c));
"""

# What this step did: spans, sessions removed and written, events re-read, visitors touched.
STEP_SUMMARY = """
SELECT (SELECT count(*) FROM s_changes), (SELECT count(*) FROM s_spans), (SELECT count(*) FROM s_old),
       (SELECT count(*) FROM s_new), (SELECT count(*) FROM s_events),
       (SELECT count(DISTINCT visitorid) FROM s_spans)
"""

TOUCHED_VISITORS = "SELECT visitorid FROM s_visitors ORDER BY 1"

# ---- the checks (asset checks of the sessions assets, evaluated by the step that updated them) ----------

# In one snapshot, leaving out the visitors with spans still queued (loaded since, not yet in sessions): the
# sessions' events and count against the loading transaction's event totals and a recount of those visitors.
CHECK_TOTALS = """
WITH queued AS (SELECT DISTINCT visitorid FROM session_changes)
SELECT (SELECT events FROM session_totals)
         - (SELECT coalesce(sum(s.events), 0) FROM queued q
            CROSS JOIN LATERAL (SELECT events FROM sessions WHERE visitorid = q.visitorid OFFSET 0) s) AS in_sessions,
       (SELECT coalesce(sum(event_count), 0) FROM event_totals)
         - (SELECT coalesce(sum(e.n), 0) FROM queued q
            CROSS JOIN LATERAL (SELECT count(*) AS n FROM clickstream_events WHERE visitorid = q.visitorid) e)
         - (SELECT coalesce(sum(d.events), 0) FROM queued q JOIN dropped_visitor_events d USING (visitorid)) AS stored,
       (SELECT count(*) FROM queued)                                                         AS queued_visitors,
       (SELECT count(*) FROM queued q
        WHERE NOT EXISTS (SELECT 1 FROM visitor_weeks w WHERE w.visitorid = q.visitorid))     AS queued_new_visitors,
       (SELECT sessions FROM session_totals)                                                 AS sessions,
       (SELECT coalesce(sum(sessions), 0) FROM cohort_sessions)                              AS cohort_sessions,
       (SELECT coalesce(sum(visitors), 0) FROM retention_counts WHERE weeks_after = 0)      AS cohort_visitors
"""

# The visitor sets of the loading transaction's event totals (their union: every visitor stored).
EVENT_VISITOR_SETS = "SELECT visitors FROM event_totals WHERE visitors IS NOT NULL"

# Of the visitors a step touched: sessions of one visitor within a gap of each other (two that should be one),
# and visitors whose sessions do not hold exactly their stored events (none still queued; with those retention
# dropped, ingestion/retention.py).
CHECK_TOUCHED = """
WITH touched AS (
    SELECT DISTINCT v.visitorid FROM unnest(%(visitors)s::bigint[]) AS v(visitorid)
    WHERE NOT EXISTS (SELECT 1 FROM session_changes q WHERE q.visitorid = v.visitorid)
)
SELECT (SELECT count(*) FROM touched) AS visitors,
       (SELECT count(*) FROM (
            SELECT s.start_ms - lag(s.end_ms) OVER (PARTITION BY s.visitorid ORDER BY s.start_ms) AS gap
            FROM touched t
            CROSS JOIN LATERAL (SELECT visitorid, start_ms, end_ms FROM sessions WHERE visitorid = t.visitorid OFFSET 0) s
        ) g WHERE gap <= %(gap)s) AS too_close,
       (SELECT count(*) FROM touched t
        WHERE (SELECT coalesce(sum(events), 0) FROM sessions s WHERE s.visitorid = t.visitorid)
           <> (SELECT count(*) FROM clickstream_events e WHERE e.visitorid = t.visitorid)
              + coalesce((SELECT events FROM dropped_visitor_events d WHERE d.visitorid = t.visitorid), 0))
       AS miscounted
"""

# Per hour and per day: a funnel step never counts more than the step before it, nor more visitors than have
# a session in the period, nor more visitors than sessions.
CHECK_FUNNEL = """
SELECT count(*) FILTER (WHERE viewed_carted > viewed OR carted_bought > carted OR viewed_bought > viewed
                           OR viewed > visitors OR carted > visitors OR bought > visitors
                           OR visitors > sessions OR bounced > sessions),
       count(*)
FROM (
    SELECT grain, period_start, sum(sessions) AS sessions, sum(bounced) AS bounced, sum(visitors) AS visitors,
           sum(visitors) FILTER (WHERE flags & 1 = 1) AS viewed,
           sum(visitors) FILTER (WHERE flags & 2 = 2) AS carted,
           sum(visitors) FILTER (WHERE flags & 4 = 4) AS bought,
           sum(visitors) FILTER (WHERE flags & 3 = 3) AS viewed_carted,
           sum(visitors) FILTER (WHERE flags & 6 = 6) AS carted_bought,
           sum(visitors) FILTER (WHERE flags & 5 = 5) AS viewed_bought
    FROM funnel_counts GROUP BY 1, 2
) p
"""
