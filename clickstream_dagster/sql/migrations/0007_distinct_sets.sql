-- Exact distinct counts from compressed id sets instead of indexes on clickstream_events.
--
-- Which visitors and items each (5-minute window, event type) and each event type already has: a window's as
-- its sorted ids (8 bytes each, big-endian, as int8send writes them), an event type's as roaring bitmaps
-- (pyroaring's portable 64-bit serialization); pipeline/distinct.py reads and writes them. A loading
-- transaction adds its new events to the sets it touches, under the ingest lock; what a set did not have
-- before is exactly what the batch adds to unique_users / unique_items. No index of clickstream_events
-- is probed or scanned for the counts any more, so its insert runs outside the lock, and the window index
-- that served the probes goes (measured: bench/README.md, seventh round).

CREATE TABLE window_sets (
    window_start  timestamptz NOT NULL,
    event         text        NOT NULL,
    visitors      bytea       NOT NULL,
    items         bytea       NOT NULL,
    PRIMARY KEY (window_start, event)
);

-- The event types' sets live next to their totals. NULL: totals from before this migration; the next loading
-- transaction builds every set from the stored rows first (pipeline/distinct.py, `rebuild_sets`).
ALTER TABLE event_totals ADD COLUMN visitors bytea, ADD COLUMN items bytea;

DROP TABLE seen_items;
DROP INDEX clickstream_events_window_idx;
ALTER TABLE clickstream_events DROP COLUMN window_start;
-- The latest event (the dashboard), and any time range a user asks for.
CREATE INDEX clickstream_events_event_time_idx ON clickstream_events (event_time);
