-- State that keeps the streaming assets incremental and exact.

-- Distinct (event, visitor) and (event, item) pairs seen so far, maintained in the same transaction that
-- inserts events, so event_statistics' unique counts are exact without rescanning clickstream_events.
CREATE TABLE seen_visitors (
    event      text   NOT NULL,
    visitorid  bigint NOT NULL,
    PRIMARY KEY (event, visitorid)
);
CREATE TABLE seen_items (
    event   text   NOT NULL,
    itemid  bigint NOT NULL,
    PRIMARY KEY (event, itemid)
);

-- 5-minute windows whose events changed since windowed_stats last recomputed them. A window re-dirtied
-- while it is being recomputed gets a newer seq and so stays queued for the next run.
CREATE SEQUENCE dirty_windows_seq;
CREATE TABLE dirty_windows (
    window_start  timestamptz PRIMARY KEY,
    seq           bigint NOT NULL DEFAULT nextval('dirty_windows_seq')
);

-- The live table is fed by ingestion time.
CREATE INDEX clickstream_events_created_at_idx ON clickstream_events (created_at);
