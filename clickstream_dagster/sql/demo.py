"""Every query `clickstream demo` runs (stack/demo.py): whether the pipeline has caught up with the topic, the
summary of what landed, and what the training job decided. Read-only; parameters bound."""

# Offsets are not dense (transaction markers, aborted records, compaction): the pipeline has caught up when
# the ledger covers every offset up to each partition's last stable offset, not when a count is reached.
# Read into stack.demo.CaughtUp.
CAUGHT_UP = """
SELECT (SELECT count(*) FROM clickstream_events WHERE kafka_topic = %(topic)s) AS stored,
       (SELECT count(*) FROM quarantine WHERE source = 'kafka' AND kafka_topic = %(topic)s) AS quarantined,
       (SELECT count(*) FROM dirty_windows) AS windows_pending,
       (SELECT count(*) FROM session_changes) AS sessions_pending,
       (SELECT coalesce(sum(event_count), 0) FROM event_statistics) AS statistics_total,
       (SELECT count(*) FROM clickstream_events) AS all_events,
       (SELECT coalesce(sum(greatest(0, least(r.end_offset, e.lso) - greatest(r.start_offset, p.first_offset))), 0)
        FROM ingested_ranges r
        JOIN ingestion_plan p ON p.kafka_topic = r.kafka_topic AND p.kafka_partition = r.kafka_partition
        JOIN unnest(%(partitions)s::int[], %(ends)s::bigint[]) AS e(partition, lso) ON e.partition = r.kafka_partition
        WHERE r.kafka_topic = %(topic)s) AS covered,
       (SELECT coalesce(sum(greatest(0, e.lso - coalesce(p.first_offset, 0))), 0)
        FROM unnest(%(partitions)s::int[], %(ends)s::bigint[]) AS e(partition, lso)
        LEFT JOIN ingestion_plan p ON p.kafka_topic = %(topic)s AND p.kafka_partition = e.partition) AS offsets
"""

SUMMARY = {
    "clickstream_events": "SELECT count(*) FROM clickstream_events",
    "quarantine": "SELECT count(*) FROM quarantine",
    "live_clickstream_events": "SELECT count(*) FROM live_clickstream_events",
    "windowed_stats (windows)": "SELECT count(DISTINCT window_start) FROM windowed_stats",
    "event_statistics": "SELECT count(*) FROM event_statistics",
    "sessions": "SELECT count(*) FROM sessions",
    "funnel (days)": "SELECT count(DISTINCT period_start) FROM funnel_counts WHERE grain = 'day'",
    "item_funnel (items)": "SELECT count(DISTINCT itemid) FROM item_funnel_counts",
    "retention (cohorts)": "SELECT count(*) FROM cohort_sessions",
    "category_tree": "SELECT count(*) FROM category_tree",
    "item_properties": "SELECT count(*) FROM item_properties",
    "items": "SELECT count(*) FROM items",
    "ml_interactions": "SELECT count(*) FROM ml_interactions",
    "model_registry (promoted version)": "SELECT coalesce(max(version), 0) FROM model_registry WHERE status = 'promoted'",
    # The served version's rows (the tables keep the previous version beside it until the next promotion).
    "recommendations": (
        "SELECT count(*) FROM recommendations WHERE model_version = (SELECT max(model_version) FROM popular_items)"
    ),
    "similar_items": (
        "SELECT count(*) FROM similar_items WHERE model_version = (SELECT max(model_version) FROM popular_items)"
    ),
    "popular_items": (
        "SELECT count(*) FROM popular_items WHERE model_version = (SELECT max(model_version) FROM popular_items)"
    ),
}

# The newest model a training run selected, with the gate's decision, and the model being served.
LATEST_SELECTED_MODEL = "SELECT version, model_type, status, reason FROM model_registry WHERE selected ORDER BY version DESC LIMIT 1"
PROMOTED_MODEL = "SELECT version, model_type FROM model_registry WHERE status = 'promoted'"
