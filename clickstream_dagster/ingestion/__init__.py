"""Ingestion, the library part (no Dagster): exact Kafka offset ranges into clickstream_events, every offset
accounted for, re-runnable without duplicates.

    ranges   the offset range and its forms (dict for run config and SQL, tag text for runs and run keys)
    planner  the sensor's cursor, and the backlog cut into runs
    reader   reading exact ranges under read_committed; kafka_log says why an offset carries no message
    loader   one batch into PostgreSQL, all or nothing (columns: its binary COPY data)
    ledger   the ranges read in full, and the proof against the plan: gaps and overlaps
    run      one ingest run: reader -> loader -> ledger
    quarantine_replay  repaired quarantine rows loaded exactly once, at their original coordinates

What records ingestion's progress, and why each exists (they answer different questions, and each is written
where its question is decided):

1. The sensor's cursor (Dagster, `{partition: next_offset}`): where the next plan starts. Dagster stores it
   with the tick, so planning needs no database round trip; it may lag behind runs already launched when the
   daemon died between launching them and storing it (the newest runs' tags cover that).
2. An ingest run's tags (`clickstream/ranges`, `clickstream/topic`): what each run is working on. They are
   how the sensor avoids planning a range twice after such a crash, and how the ledger's proof knows what is
   in flight rather than missing. Only Dagster knows whether a run is active.
3. `ingestion_plan` (PostgreSQL): how far the sensor has planned each partition, and where it began. It is the
   other side of the proof: every offset from `first_offset` to `planned_to` must end up in the ledger. It is
   in PostgreSQL, beside the ledger, so the proof is one query.
4. `ingested_ranges`, the ledger (PostgreSQL): each range read in full, written in the loading transactions'
   database with what was read, stored, quarantined and skipped, so `read + skipped + lost = end - start` is
   checked per range and the totals reconcile with the tables.
5. `ingestion_repairs` (PostgreSQL): the gaps the sensor requested again, with attempts and backoff, so a gap
   that cannot be read is retried a bounded number of times and shown to the operator.

None of them can stand in for another: the cursor and the tags live in Dagster's storage (the plan must not
depend on the events database answering), the plan and the ledger in the events database (the proof must
be transactional with the rows it proves).
"""
