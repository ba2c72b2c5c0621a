-- Every ingest run looks up the offset ranges it recorded (its checks and the live table read exactly those
-- rows). The ledger grows by one row per partition per run, about 50,000 rows a day at one run per 5 seconds
-- on three partitions, so the lookup gets an index instead of a scan of the whole ledger.
CREATE INDEX ingested_ranges_run_idx ON ingested_ranges (dagster_run_id);
