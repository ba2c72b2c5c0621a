-- Housekeeping (the `housekeeping` job) finds replayed quarantine rows by when they were replayed.
CREATE INDEX quarantine_replayed_at_idx ON quarantine (replayed_at) WHERE replayed_at IS NOT NULL;

-- The daily training job reads the last N days of event time (DatasetConfig.window_days): a block-range index
-- on the event time (rows arrive roughly in time order) lets that read skip the older history. Tiny, and
-- next to free to maintain under COPY.
CREATE INDEX clickstream_events_timestamp_brin ON clickstream_events USING brin ("timestamp");
