"""Every query the recommendations API runs, in one place (read-only). Parameters are always bound (%s),
never formatted into the text. The serving tables come from migration 0003_recommendations.sql; the visitor's
events are clickstream_events (filled by the asset raw_events), read through the index of 0011_live_sessions.sql.

A model's serving rows (recommendations, similar_items, then popular_items) are written after it is
promoted, beside the rows of the version being served; popular_items comes last, so its rows (a few hundred
at most) mark "this version's rows are in place". That is checked there, never by scanning the large
recommendations table.
"""

# The promoted model (at most one, by a partial unique index), and whether its serving rows are loaded.
PROMOTED_MODEL = """
SELECT m.version,
       EXISTS (SELECT 1 FROM popular_items p WHERE p.model_version = m.version) AS ready
FROM model_registry m
WHERE m.status = 'promoted'
"""

# Whether a version still has serving rows (the one served before a promotion whose rows are not in yet).
VERSION_READY = "SELECT EXISTS (SELECT 1 FROM popular_items WHERE model_version = %s)"

# Everything a visitor's answer needs except the cached fallback lists, in one round trip (api/session.py has
# the rules and the parameters). Rows (part, itemid, score), ordered by part, then best first:
#   part 0, excluded: items the visitor bought (any time) and the items of the live session's newest
#           `on_screen` events (score NULL);
#   part 1, session:  the neighbours (similar_items of `version`) of the live session's items, each scored
#           sum(event weight x recency decay x similarity) over the session's events, the excluded left out,
#           at most k;
#   part 2, model:    the visitor's precomputed recommendations of `version`, the excluded left out, at most k.
# The session: the visitor's newest `events` views and add-to-carts (event time), cut at the first gap longer
# than `gap_ms`; live when one of its events was ingested (created_at) within `live_s` seconds, else empty.
# Index use: three short ranges of clickstream_events_visitor_event_time_idx (the newest views and carts
# backwards, stopping after `events` entries; the purchases), the primary keys of similar_items (one range
# per session item) and recommendations. Every parameter is cast, so the statement has one type signature
# whatever Python values it is given (and EXPLAIN (GENERIC_PLAN) can plan it, tests/api/test_query_plan.py).
VISITOR_ANSWER = """
WITH recent AS (
    (SELECT itemid, event, "timestamp", created_at
     FROM clickstream_events
     WHERE visitorid = %(visitor)s::bigint AND event = 'view'
     ORDER BY "timestamp" DESC
     LIMIT %(events)s::integer)
    UNION ALL
    (SELECT itemid, event, "timestamp", created_at
     FROM clickstream_events
     WHERE visitorid = %(visitor)s::bigint AND event = 'addtocart'
     ORDER BY "timestamp" DESC
     LIMIT %(events)s::integer)
), ordered AS (
    SELECT itemid, event, created_at,
           row_number() OVER newest_first AS pos,
           coalesce(lag("timestamp") OVER newest_first - "timestamp" > %(gap_ms)s::bigint, false) AS gap_before
    FROM recent
    WINDOW newest_first AS (ORDER BY "timestamp" DESC, event, itemid)
), cut AS (
    SELECT itemid, event, created_at, pos
    FROM (SELECT *, bool_or(gap_before) OVER (ORDER BY pos) AS ended FROM ordered) o
    WHERE NOT ended AND pos <= %(events)s::integer
), session AS (
    SELECT itemid, event, pos
    FROM cut
    WHERE (SELECT max(created_at) FROM cut) >= now() - make_interval(secs => %(live_s)s::float8)
), excluded AS (
    SELECT itemid FROM clickstream_events WHERE visitorid = %(visitor)s::bigint AND event = 'transaction'
    UNION
    SELECT itemid FROM session WHERE pos <= %(on_screen)s::integer
), weights AS (
    SELECT itemid,
           sum(CASE WHEN event = 'addtocart' THEN %(cart_weight)s::float8 ELSE %(view_weight)s::float8 END
               * power(%(decay)s::float8, pos - 1)) AS weight
    FROM session
    GROUP BY itemid
), neighbours AS (
    SELECT s.similar_itemid AS itemid, sum(w.weight * s.score) AS score
    FROM weights w
    JOIN similar_items s ON s.model_version = %(version)s::bigint AND s.itemid = w.itemid
    WHERE s.similar_itemid NOT IN (SELECT itemid FROM excluded)
    GROUP BY s.similar_itemid
    ORDER BY score DESC, s.similar_itemid
    LIMIT %(k)s::integer
), model AS (
    SELECT itemid, score::float8 AS score, rank
    FROM recommendations
    WHERE visitorid = %(visitor)s::bigint AND model_version = %(version)s::bigint
      AND itemid NOT IN (SELECT itemid FROM excluded)
    ORDER BY rank
    LIMIT %(k)s::integer
)
SELECT part, itemid, score
FROM (SELECT 0 AS part, itemid, NULL::float8 AS score, 0::bigint AS ord FROM excluded
      UNION ALL
      SELECT 1, itemid, score, row_number() OVER (ORDER BY score DESC, itemid) FROM neighbours
      UNION ALL
      SELECT 2, itemid, score, rank FROM model) parts
ORDER BY part, ord
"""

# The fallback lists of one model version: every `popular` row, then every `trending` row (the API merges
# them in that order without duplicates; both are at most a few hundred rows, cached per version).
POPULAR_ITEMS = """
SELECT list, itemid, score
FROM popular_items
WHERE model_version = %s
ORDER BY list = 'trending', rank
"""

# (similar_itemid, score) for one item under one model version, best first.
SIMILAR_ITEMS = """
SELECT similar_itemid, score
FROM similar_items
WHERE itemid = %s AND model_version = %s
ORDER BY rank
LIMIT %s
"""
