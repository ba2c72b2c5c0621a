"""Ingestion, the library part: exact Kafka offset ranges read under read_committed, the loading transaction
and its ledger, offset planning, the raw record-batch reader and the quarantine replay. No Dagster."""
