"""Every query the recommendations API runs, in one place (read-only). Parameters are always bound (%s),
never formatted into the text. The serving tables come from migration 0003_recommendations.sql; the visitor's
events are clickstream_events (filled by the asset raw_events), read through the index of 0011_live_sessions.sql.

A model's serving rows (recommendations, similar_items, then popular_items) are written after it is
promoted, beside the rows of the version being served; popular_items comes last, so its rows (a few hundred
at most) mark "this version's rows are in place". That is checked there, never by scanning the large
recommendations table.
"""

# The serving tables' version while no model was ever promoted: popular_items' lists only (the ML job writes
# them when its gate decides nothing can be promoted yet), and every visitor is answered from them.
POPULARITY_VERSION = 0
# How deep the ML job writes each model's lists (assets/ml.py), so the most one stored list can answer; the
# API tops a longer recommendation up from the popular lists, and bounds /similar-items' k by this.
RECOMMENDATIONS_PER_VISITOR = 20
SIMILAR_ITEMS_PER_ITEM = 20
POPULAR_ITEMS_PER_LIST = 100  # each of `popular` and `trending`: the API's k goes up to this

# The promoted model (at most one, by a partial unique index), and when its serving rows were completed:
# popular_items' computed_at (one transaction writes them all), NULL while they are not written yet. A
# re-written version gets a new time, so the API reloads it.
PROMOTED_MODEL = """
SELECT m.version,
       (SELECT max(p.computed_at) FROM popular_items p WHERE p.model_version = m.version) AS ready_at
FROM model_registry m
WHERE m.status = 'promoted'
"""

# When a version's serving rows were completed, NULL when it has none: the version served before a promotion
# whose rows are not in yet, or the popularity fallback (POPULARITY_VERSION).
VERSION_READY_AT = "SELECT max(computed_at) FROM popular_items WHERE model_version = %s"

# Why nothing is promoted: the gate's reason for the newest model a training run selected.
LATEST_GATE_DECISION = """
SELECT version, reason FROM model_registry
WHERE selected AND reason IS NOT NULL
ORDER BY version DESC LIMIT 1
"""

# What changes live, for one visitor: their purchases and their live session, in one round trip (the
# promoted model's lists are in the API's memory, api/answers.py; api/session.py has the rules, the
# parameters and the scoring). Rows (part, itemid, event, pos):
#   part 0: an item the visitor bought (any time; event and pos NULL);
#   part 1: an event of the live session, pos 1 the newest: the visitor's newest `events` views and
#           add-to-carts (event time), cut at the first gap longer than `gap_ms`; live when one of its
#           events was ingested (created_at) within `live_s` seconds, else no rows.
# Index use: three short ranges of clickstream_events_visitor_event_time_idx (the newest views and carts
# backwards, stopping after `events` entries; the purchases). Every parameter is cast, so the statement has
# one type signature whatever Python values it is given (and EXPLAIN (GENERIC_PLAN) can plan it,
# tests/api/test_query_plan.py).
VISITOR_SESSION = """
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
)
SELECT 0 AS part, itemid, NULL::text AS event, NULL::bigint AS pos
FROM clickstream_events
WHERE visitorid = %(visitor)s::bigint AND event = 'transaction'
UNION ALL
SELECT 1, itemid, event::text, pos
FROM cut
WHERE (SELECT max(created_at) FROM cut) >= now() - make_interval(secs => %(live_s)s::float8)
"""

# One model version's serving rows for the API's memory (api/answers.py), sorted as its arrays are. COPY
# takes no bind parameters: {version} is an integer literal composed by psycopg.sql.
RECOMMENDATION_ROWS = """
COPY (SELECT visitorid, itemid, score FROM recommendations WHERE model_version = {version}
      ORDER BY visitorid, rank) TO STDOUT (FORMAT BINARY)
"""
SIMILAR_ITEM_ROWS = """
COPY (SELECT itemid, similar_itemid, score FROM similar_items WHERE model_version = {version}
      ORDER BY itemid, rank) TO STDOUT (FORMAT BINARY)
"""

# The fallback lists of one model version: every `popular` row, then every `trending` row (the API merges
# them in that order without duplicates; both are at most a few hundred rows, cached per version).
POPULAR_ITEMS = """
SELECT list, itemid, score
FROM popular_items
WHERE model_version = %s
ORDER BY list = 'trending', rank
"""
