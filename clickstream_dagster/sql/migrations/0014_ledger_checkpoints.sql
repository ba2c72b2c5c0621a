-- The ledger's checkpoints: contiguous, reconciled ranges that have settled are merged into one row per stretch
-- (ingestion.ledger.compact_ledger), so the proof of each partition starts from its last proven point and the
-- ledger's size follows the ranges recorded since, not the months behind them. A merged row keeps the sums of
-- the ranges it replaces (read = stored + quarantined and read + skipped + lost = end - start still hold) and
-- how many they were.
ALTER TABLE ingested_ranges ADD COLUMN ranges_merged bigint NOT NULL DEFAULT 1;
