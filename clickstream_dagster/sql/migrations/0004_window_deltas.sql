-- windowed_stats and event_statistics kept exact without rescanning clickstream_events: the loading
-- transaction records what each batch changed, and windowed_stats aggregates only that (with Spark).

-- Distinct (window, event, visitor) and (window, event, item) pairs: a pair inserted here is new to its window.
CREATE TABLE window_visitors (
    window_start  timestamptz NOT NULL,
    event         text        NOT NULL,
    visitorid     bigint      NOT NULL,
    PRIMARY KEY (window_start, event, visitorid)
);
CREATE TABLE window_items (
    window_start  timestamptz NOT NULL,
    event         text        NOT NULL,
    itemid        bigint      NOT NULL,
    PRIMARY KEY (window_start, event, itemid)
);

-- The queue of changes windowed_stats has not applied yet: one row per newly inserted event, carrying its
-- visitorid / itemid only where it brought a new pair to its window. A batch is one loading transaction;
-- windowed_stats applies whole committed batches and deletes them in the transaction that adds their deltas.
CREATE TABLE window_change_batches (
    batch_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    events      bigint      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE window_changes (
    batch_id      bigint      NOT NULL,
    window_start  timestamptz NOT NULL,
    event         text        NOT NULL,
    visitorid     bigint,
    itemid        bigint
);

-- Per event type totals, maintained by the loading transaction (event_statistics copies them).
CREATE TABLE event_totals (
    event         text   PRIMARY KEY,
    event_count   bigint NOT NULL,
    unique_users  bigint NOT NULL,
    unique_items  bigint NOT NULL
);

-- Rows loaded before this migration: their pairs, their totals, and one batch with all of them, so the next
-- windowed_stats run rebuilds every window from scratch.
INSERT INTO window_visitors (window_start, event, visitorid)
SELECT DISTINCT to_timestamp(floor("timestamp" / 300000.0) * 300), event, visitorid FROM clickstream_events;
INSERT INTO window_items (window_start, event, itemid)
SELECT DISTINCT to_timestamp(floor("timestamp" / 300000.0) * 300), event, itemid FROM clickstream_events;
WITH batch AS (
    INSERT INTO window_change_batches (events)
    SELECT count(*) FROM clickstream_events HAVING count(*) > 0
    RETURNING batch_id
)
INSERT INTO window_changes (batch_id, window_start, event, visitorid, itemid)
SELECT b.batch_id, to_timestamp(floor(e."timestamp" / 300000.0) * 300), e.event, e.visitorid, e.itemid
FROM clickstream_events e CROSS JOIN batch b;
DELETE FROM windowed_stats;
INSERT INTO event_totals (event, event_count, unique_users, unique_items)
SELECT c.event, c.n,
       (SELECT count(*) FROM seen_visitors s WHERE s.event = c.event),
       (SELECT count(*) FROM seen_items s WHERE s.event = c.event)
FROM (SELECT event, count(*) AS n FROM clickstream_events GROUP BY event) c;

-- The old queue of windows to recompute; `dirty_windows` stays as the windows with pending changes.
DROP TABLE dirty_windows;
DROP SEQUENCE dirty_windows_seq;
CREATE VIEW dirty_windows AS SELECT DISTINCT window_start FROM window_changes;
