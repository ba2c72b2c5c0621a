"""Every query the pipeline's Prometheus exporter runs (read-only, each one cheap: the ledger and the small
tables, and the indexes of clickstream_events and windowed_stats; never a scan of the events).

The figures are the ledger's (ingested_ranges, ingestion_plan, quarantine); the exporter sets them beside
Kafka's own offsets (monitoring/exporter.py), so lag is measured against the broker, not our bookkeeping.
"""

# Per topic and partition: where the ledger has read up to (the furthest range end), what it stored and
# quarantined, and the offsets of the plan that no range covers yet (gaps; in flight or lost). Read into
# monitoring.exporter.LedgerRow.
LEDGER = """
WITH ranges AS (
    SELECT kafka_topic, kafka_partition, max(end_offset) AS read_to, sum(rows_inserted) AS stored,
           sum(rows_quarantined) AS quarantined,
           sum(skipped_control + skipped_aborted + skipped_compacted) AS skipped,
           sum(lost_retention) AS lost
    FROM ingested_ranges GROUP BY kafka_topic, kafka_partition
)
SELECT coalesce(r.kafka_topic, p.kafka_topic) AS topic, coalesce(r.kafka_partition, p.kafka_partition) AS partition,
       coalesce(r.read_to, p.first_offset) AS read_to, coalesce(r.stored, 0) AS stored,
       coalesce(r.quarantined, 0) AS quarantined, coalesce(r.skipped, 0) AS skipped, coalesce(r.lost, 0) AS lost,
       p.first_offset, p.planned_to
FROM ranges r
FULL JOIN ingestion_plan p ON p.kafka_topic = r.kafka_topic AND p.kafka_partition = r.kafka_partition
ORDER BY 1, 2
"""

# windowed_stats' freshness: the newest event's time (event_totals.last_timestamp, kept by the loading
# transaction: one row per event type, however many events are stored), the newest window's end, and when a
# window was last written; plus the windows waiting to be recomputed. Read into monitoring.exporter.WindowsRow.
WINDOWS = """
SELECT (SELECT to_timestamp(max(last_timestamp) / 1000.0) FROM event_totals) AS newest_event,
       (SELECT max(window_end) FROM windowed_stats) AS newest_window_end,
       (SELECT max(updated_at) FROM windowed_stats) AS last_write,
       (SELECT count(*) FROM dirty_windows) AS pending
"""

# The sessions step's freshness: spans loaded and not applied yet, and how long the oldest has waited (0 when
# none). Read into monitoring.exporter.SessionsRow.
SESSIONS = """
SELECT count(*) AS pending_spans,
       coalesce(extract(epoch FROM now() - min(queued_at)), 0)::float8 AS oldest_pending_seconds,
       (SELECT sessions FROM session_totals) AS sessions
FROM session_changes
"""

# Rows quarantined per source (kafka messages and CSV rows), whatever their reason.
QUARANTINE = "SELECT source, count(*) FROM quarantine GROUP BY source ORDER BY source"

# The promoted model: its version, type, when it was decided, and its own validation metrics (the ML job
# stores every candidate type's under model_registry.metrics -> 'validation' -> <type>, numbers by name).
# Read into monitoring.exporter.ModelRow.
PROMOTED_MODEL = """
SELECT version, model_type, extract(epoch FROM decided_at) AS decided_at, metrics -> 'validation' -> model_type AS validation
FROM model_registry WHERE status = 'promoted'
"""
