"""SQL of the recommender library (`clickstream_dagster.ml.source`, `training_tables`, `registry`,
`publish`): training data in, registry and serving tables out.

Tables are created by migration 0003. Every statement is parameterised; table rebuilds delete and COPY in
one transaction, so readers (the API, the dashboard) see the old rows until the new ones are committed.
Queries read into typed rows name their columns, which are the fields of the row class that reads them.
"""

# --- training data -----------------------------------------------------------------------------------------

# Events as CSV for pandas' C parser (much faster than row-by-row fetching for millions of rows).
# `since_ms` bounds the window (0: everything).
COPY_EVENTS_OUT = """
COPY (
    SELECT "timestamp", visitorid, event, itemid, transactionid
    FROM clickstream_events
    WHERE "timestamp" >= {since_ms}
) TO STDOUT WITH (FORMAT csv, HEADER)
"""

# The newest event's time in ms, from the end of the event-time index (max("timestamp") has no index to use).
MAX_EVENT_TIMESTAMP = 'SELECT "timestamp" FROM clickstream_events ORDER BY event_time DESC LIMIT 1'

SELECT_ITEMS = "SELECT itemid, categoryid, available, category_path FROM items"

DELETE_INTERACTIONS = "DELETE FROM ml_interactions"
COPY_INTERACTIONS = """
COPY ml_interactions (split, visitorid, itemid, strength, views, carts, purchases, first_ts, last_ts)
FROM STDIN (FORMAT BINARY)
"""
INTERACTION_TYPES = ("text", "int8", "int8", "float8", "int4", "int4", "int4", "int8", "int8")
# Read into ml.training_tables.SplitCounts.
INTERACTIONS_BY_SPLIT = """
SELECT split, count(*) AS interactions, count(DISTINCT visitorid) AS visitors, count(DISTINCT itemid) AS items,
       min(first_ts) AS first_ts, max(last_ts) AS last_ts
FROM ml_interactions GROUP BY split ORDER BY min(first_ts)
"""

DELETE_VISITOR_FEATURES = "DELETE FROM ml_visitor_features"
VISITOR_FEATURE_COLUMNS = (
    "visitorid", "events", "views", "carts", "purchases", "sessions", "distinct_items", "active_days",
    "active_hours", "peak_hour", "cart_rate", "purchase_rate", "recency_days", "tenure_days", "first_ts",
    "last_ts",
)  # fmt: skip
VISITOR_FEATURE_TYPES = (
    "int8", "int4", "int4", "int4", "int4", "int4", "int4", "int4", "int4", "int4", "float8", "float8",
    "float8", "float8", "int8", "int8",
)  # fmt: skip
COPY_VISITOR_FEATURES = (
    f"COPY ml_visitor_features ({', '.join(VISITOR_FEATURE_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
)

DELETE_ITEM_FEATURES = "DELETE FROM ml_item_features"
ITEM_FEATURE_COLUMNS = (
    "itemid", "events", "views", "carts", "purchases", "visitors", "conversion", "recent_events",
    "earlier_events", "trend", "last_ts", "categoryid", "category_path", "available",
)  # fmt: skip
ITEM_FEATURE_TYPES = (
    "int8", "int4", "int4", "int4", "int4", "int4", "float8", "int4", "int4", "float8", "int8", "int8",
    "int8[]", "bool",
)  # fmt: skip
COPY_ITEM_FEATURES = f"COPY ml_item_features ({', '.join(ITEM_FEATURE_COLUMNS)}) FROM STDIN (FORMAT BINARY)"

DELETE_HOURLY_PROFILE = "DELETE FROM ml_hourly_profile"
COPY_HOURLY_PROFILE = "COPY ml_hourly_profile (hour, event, events, share) FROM STDIN (FORMAT BINARY)"
HOURLY_PROFILE_TYPES = ("int4", "text", "int8", "float8")

# --- model registry ----------------------------------------------------------------------------------------

# A run registers every candidate: the best as `candidate` (selected, with its artefact), the others as
# `rejected` at once, with the reason and their evidence but no artefact.
INSERT_MODEL = """
INSERT INTO model_registry
    (model_type, params, data_window, cleaning, metrics, library_versions, artefact, artefact_sha256,
     dagster_run_id, selected, status, reason, decided_at)
VALUES (%(model_type)s, %(params)s, %(data_window)s, %(cleaning)s, %(metrics)s, %(library_versions)s,
        %(artefact)s, %(artefact_sha256)s, %(dagster_run_id)s, %(selected)s,
        CASE WHEN %(selected)s THEN 'candidate' ELSE 'rejected' END, %(reason)s,
        CASE WHEN %(selected)s THEN NULL ELSE now() END)
RETURNING version
"""
SET_ARTEFACT_PATH = "UPDATE model_registry SET artefact_path = %s WHERE version = %s"

# Read into ml.registry.PromotedModel.
PROMOTED_MODEL = """
SELECT version, model_type, params, metrics, artefact, artefact_sha256
FROM model_registry WHERE status = 'promoted'
"""

PROMOTED_VERSION = "SELECT version FROM model_registry WHERE status = 'promoted'"

# The candidate a run selected (the newest, should a run be retried). Read into ml.registry.RunCandidate.
CANDIDATE_OF_RUN = """
SELECT version, model_type, metrics, status FROM model_registry
WHERE dagster_run_id = %s AND selected ORDER BY version DESC LIMIT 1
"""

REJECT_MODEL = """
UPDATE model_registry SET status = 'rejected', reason = %s, decided_at = now()
WHERE version = %s AND status = 'candidate'
"""
PASS_GATE = "UPDATE model_registry SET reason = %s WHERE version = %s AND status = 'candidate'"

# Promotion is two statements in one transaction: the unique partial index allows one promoted row.
RETIRE_PROMOTED = """
UPDATE model_registry SET status = 'retired', decided_at = now()
WHERE status = 'promoted' AND version <> %s
"""
PROMOTE_MODEL = """
UPDATE model_registry SET status = 'promoted', decided_at = now()
WHERE version = %s AND status IN ('candidate', 'promoted')
RETURNING version
"""

REGISTRY_SUMMARY = "SELECT status, count(*) FROM model_registry GROUP BY status ORDER BY status"

# Housekeeping: the artefacts of versions not served, trained more than N days ago, are dropped (their row,
# with its evidence, stays: a few kB per version); returns the exported files to delete.
PRUNE_MODEL_ARTEFACTS = """
WITH old AS (
    SELECT version, artefact_path FROM model_registry
    WHERE status <> 'promoted' AND octet_length(artefact) > 0
      AND trained_at < now() - %(days)s * interval '1 day'
    FOR UPDATE
)
UPDATE model_registry m SET artefact = ''::bytea, artefact_path = NULL
FROM old WHERE m.version = old.version
RETURNING m.version, old.artefact_path
"""

# --- serving tables ----------------------------------------------------------------------------------------

# Each rebuild first removes the new version's rows (a re-run starts clean) and every version older than the
# one being served (the newest other version with popular_items rows), so readers of the served version are
# never disturbed; popular_items is written last and marks the new version complete.

# What active visitors bought, over all ingested history (not only the model's training window).
PURCHASES_OF_VISITORS = """
SELECT DISTINCT visitorid, itemid FROM clickstream_events
WHERE event = 'transaction' AND visitorid = ANY(%s)
"""
ACTIVE_VISITORS = """
SELECT visitorid FROM clickstream_events
WHERE "timestamp" >= %s
GROUP BY visitorid ORDER BY max("timestamp") DESC, visitorid
LIMIT %s
"""

PRUNE_RECOMMENDATIONS = """
DELETE FROM recommendations
WHERE model_version = %(version)s
   OR model_version < (SELECT coalesce(max(model_version), 0) FROM popular_items WHERE model_version <> %(version)s)
"""
COPY_RECOMMENDATIONS = (
    "COPY recommendations (visitorid, rank, itemid, score, model_version) FROM STDIN (FORMAT BINARY)"
)
RECOMMENDATION_TYPES = ("int8", "int4", "int8", "float4", "int8")
RECOMMENDATIONS_SUMMARY = (
    "SELECT count(*), count(DISTINCT visitorid) FROM recommendations WHERE model_version = %s"
)

PRUNE_SIMILAR_ITEMS = """
DELETE FROM similar_items
WHERE model_version = %(version)s
   OR model_version < (SELECT coalesce(max(model_version), 0) FROM popular_items WHERE model_version <> %(version)s)
"""
COPY_SIMILAR_ITEMS = (
    "COPY similar_items (itemid, rank, similar_itemid, score, model_version) FROM STDIN (FORMAT BINARY)"
)
SIMILAR_ITEM_TYPES = ("int8", "int4", "int8", "float4", "int8")
SIMILAR_ITEMS_SUMMARY = "SELECT count(*), count(DISTINCT itemid) FROM similar_items WHERE model_version = %s"

PRUNE_POPULAR_ITEMS = """
DELETE FROM popular_items
WHERE model_version = %(version)s
   OR model_version < (SELECT coalesce(max(model_version), 0) FROM popular_items WHERE model_version <> %(version)s)
"""
COPY_POPULAR_ITEMS = """
COPY popular_items (list, rank, itemid, score, visitors, recent_events, earlier_events, trend, model_version)
FROM STDIN (FORMAT BINARY)
"""
POPULAR_ITEM_TYPES = ("text", "int4", "int8", "float8", "int4", "int4", "int4", "float8", "int8")
POPULAR_ITEMS_SUMMARY = (
    "SELECT list, count(*) FROM popular_items WHERE model_version = %s GROUP BY list ORDER BY list"
)
