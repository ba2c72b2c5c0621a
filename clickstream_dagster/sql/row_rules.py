"""The row rules of clickstream_events, in one table, and the queries of raw_events' checks: each rule's
name (its asset check's and its count's), what it checks, how a violating row is described, and its SQL
predicate. The asset checks of raw_events, their specs, their results and the queries below are all built
from `ROW_RULES`; a rule is added here once.

One pass over the rows each checked offset range holds counts everything the checks need: the rows stored
(reconciliation), each rule's violations (`violations`, an array in `ROW_RULES`' order), and rows with the
same offset as the row before them (duplicated source coordinates; the unique key should make them
impossible, the check proves it is in place and held). A range's rows are read through the source-coordinates
key, in offset order, so a run's checks cost what the run loaded, not what the table holds, and need no sort.

The predicates are fixed SQL of this module (the event types from `events.EVENT_TYPES` as a literal); the
values that vary are bound parameters (`min_ts`, `max_ts`, `run_id`).
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from clickstream_dagster.events import EVENT_TYPES


@dataclass(frozen=True)
class RowRule:
    name: str  # the asset check's name
    checks: str  # what holds for every row (the check's description)
    violating: str  # how a violating row is described ("rows with ...")
    predicate: sql.Composable  # true for a violating row of clickstream_events (with `previous_offset`)


ROW_RULES: tuple[RowRule, ...] = (
    RowRule(
        "ids_present_and_non_negative",
        "visitorid and itemid present and non-negative",
        "with a missing or negative id",
        sql.SQL("visitorid IS NULL OR itemid IS NULL OR visitorid < 0 OR itemid < 0"),
    ),
    RowRule(
        "event_type_allowed",
        f"event is one of {', '.join(EVENT_TYPES)}",
        "with an unknown event type",
        sql.SQL("event <> ALL({})").format(sql.Literal(list(EVENT_TYPES))),
    ),
    RowRule(
        "timestamps_in_range",
        "timestamps between 2000 and 2100, and event_time agrees with them",
        "with a timestamp out of range",
        sql.SQL(
            '"timestamp" < %(min_ts)s OR "timestamp" >= %(max_ts)s '
            'OR event_time <> to_timestamp("timestamp"::float8 / 1000)'
        ),
    ),
    RowRule(
        "transactionid_only_on_transactions",
        "transactionid present exactly on transaction events",
        "where transactionid disagrees with the event type",
        sql.SQL("(event = 'transaction') <> (transactionid IS NOT NULL) OR transactionid < 0"),
    ),
    RowRule(
        "no_duplicate_source_coordinates",
        "no two rows share (topic, partition, offset)",
        "with duplicated source coordinates",
        sql.SQL("kafka_offset = previous_offset"),
    ),
)

_VIOLATIONS = sql.SQL("ARRAY[{}]::bigint[] AS violations").format(
    sql.SQL(", ").join(sql.SQL("count(*) FILTER (WHERE {})").format(r.predicate) for r in ROW_RULES)
)

# A ledger range's (`r`) messages still in the quarantine, and those repaired and replayed since.
_QUARANTINE_COUNTS = sql.SQL("""(SELECT count(*) FROM quarantine q
         WHERE q.source = 'kafka' AND q.kafka_topic = r.kafka_topic AND q.kafka_partition = r.kafka_partition
           AND q.kafka_offset >= r.start_offset AND q.kafka_offset < r.end_offset
           AND q.replayed_at IS NULL) AS quarantined,
       (SELECT count(*) FROM quarantine q
         WHERE q.source = 'kafka' AND q.kafka_topic = r.kafka_topic AND q.kafka_partition = r.kafka_partition
           AND q.kafka_offset >= r.start_offset AND q.kafka_offset < r.end_offset
           AND q.replayed_at IS NOT NULL) AS replayed""")

# Per range of one run: its ledger row, the rows stored and each rule's violations, then the rows quarantined
# and replayed (rows: assets.ingestion.RangeCheck).
CHECK_RUN_RANGES = sql.SQL("""
SELECT r.kafka_topic AS topic, r.kafka_partition AS partition, r.start_offset AS start, r.end_offset AS "end",
       r.messages_read AS read, r.skipped_control AS control, r.skipped_aborted AS aborted,
       r.skipped_compacted AS compacted, r.lost_retention AS lost, r.rows_dropped AS dropped, c.stored,
       c.violations,
       {quarantine}
FROM ingested_ranges r
CROSS JOIN LATERAL (
    SELECT count(*) AS stored, {violations}
    FROM (SELECT e.*, lag(e.kafka_offset) OVER (ORDER BY e.kafka_offset) AS previous_offset
          FROM clickstream_events e
          WHERE e.kafka_topic = r.kafka_topic AND e.kafka_partition = r.kafka_partition
            AND e.kafka_offset >= r.start_offset AND e.kafka_offset < r.end_offset) e
) c
WHERE r.dagster_run_id = %(run_id)s
ORDER BY 1, 2, 3
""").format(violations=_VIOLATIONS, quarantine=_QUARANTINE_COUNTS)

# Checks executed on their own (no ranges in their run) cover every row of the table, in or out of a recorded
# range: one row, `violations`.
CHECK_ALL_ROWS = sql.SQL("""
SELECT {violations}
FROM (SELECT e.*, lag(e.kafka_offset) OVER (PARTITION BY e.kafka_topic, e.kafka_partition
                                            ORDER BY e.kafka_offset) AS previous_offset
      FROM clickstream_events e) e
""").format(violations=_VIOLATIONS)

# ... and every range of the ledger for the reconciliation (rows: assets.ingestion.RangeCheck).
CHECK_ALL_RANGES = sql.SQL("""
SELECT r.kafka_topic AS topic, r.kafka_partition AS partition, r.start_offset AS start, r.end_offset AS "end",
       r.messages_read AS read, r.skipped_control AS control, r.skipped_aborted AS aborted,
       r.skipped_compacted AS compacted, r.lost_retention AS lost, r.rows_dropped AS dropped,
       (SELECT count(*) FROM clickstream_events e
         WHERE e.kafka_topic = r.kafka_topic AND e.kafka_partition = r.kafka_partition
           AND e.kafka_offset >= r.start_offset AND e.kafka_offset < r.end_offset) AS stored,
       {quarantine}
FROM ingested_ranges r
ORDER BY 1, 2, 3
""").format(quarantine=_QUARANTINE_COUNTS)
