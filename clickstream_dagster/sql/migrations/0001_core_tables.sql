-- Core tables of the platform. Each table is created here and nowhere else.
-- Timestamps from events.csv stay as epoch milliseconds in "timestamp" (the source format), and
-- event_time is the same instant as timestamptz for windowing and dashboards.

CREATE TABLE clickstream_events (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "timestamp"     bigint      NOT NULL,
    event_time      timestamptz NOT NULL,
    visitorid       bigint      NOT NULL,
    event           text        NOT NULL,
    itemid          bigint      NOT NULL,
    transactionid   bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    produced_at     timestamptz,               -- Kafka record timestamp (producer clock)
    kafka_topic     text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    CONSTRAINT clickstream_events_source_uq UNIQUE (kafka_topic, kafka_partition, kafka_offset)
);
CREATE INDEX clickstream_events_event_time_idx ON clickstream_events (event_time);
CREATE INDEX clickstream_events_visitor_idx ON clickstream_events (visitorid, event_time);

-- The prototype's live table: the most recent slice of ingested events, pruned as the horizon moves.
CREATE TABLE live_clickstream_events (
    kafka_topic     text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    "timestamp"     bigint      NOT NULL,
    event_time      timestamptz NOT NULL,
    visitorid       bigint      NOT NULL,
    event           text        NOT NULL,
    itemid          bigint      NOT NULL,
    transactionid   bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kafka_topic, kafka_partition, kafka_offset)
);
CREATE INDEX live_clickstream_events_event_time_idx ON live_clickstream_events (event_time);

-- 5-minute tumbling windows on event time, per event type; exact distinct counts.
CREATE TABLE windowed_stats (
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL,
    event         text        NOT NULL,
    event_count   bigint      NOT NULL,
    unique_users  bigint      NOT NULL,
    unique_items  bigint      NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (window_start, event)
);

-- Per event type totals over everything ingested.
CREATE TABLE event_statistics (
    event         text        PRIMARY KEY,
    event_count   bigint      NOT NULL,
    unique_users  bigint      NOT NULL,
    unique_items  bigint      NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE category_tree (
    categoryid  bigint PRIMARY KEY,
    parentid    bigint
);

CREATE TABLE item_properties (
    "timestamp" bigint NOT NULL,
    itemid      bigint NOT NULL,
    property    text   NOT NULL,
    value       text   NOT NULL
);
CREATE INDEX item_properties_item_idx ON item_properties (itemid, property, "timestamp");

-- Each item's current state: latest categoryid and available snapshots, and the category path to the root.
CREATE TABLE items (
    itemid         bigint PRIMARY KEY,
    categoryid     bigint,
    available      boolean,
    category_path  bigint[],
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Rejected input, never silently dropped: Kafka messages (topic/partition/offset) or CSV rows (file/line).
CREATE TABLE quarantine (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source          text        NOT NULL CHECK (source IN ('kafka', 'csv')),
    kafka_topic     text,
    kafka_partition integer,
    kafka_offset    bigint,
    source_file     text,
    source_line     bigint,
    raw_payload     bytea,
    reason          text        NOT NULL,
    quarantined_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX quarantine_kafka_uq ON quarantine (kafka_topic, kafka_partition, kafka_offset)
    WHERE source = 'kafka';
CREATE UNIQUE INDEX quarantine_csv_uq ON quarantine (source_file, source_line)
    WHERE source = 'csv';

-- Ledger of offset ranges consumed by raw_events: the reconciliation check compares it with what landed.
CREATE TABLE ingested_ranges (
    kafka_topic       text    NOT NULL,
    kafka_partition   integer NOT NULL,
    start_offset      bigint  NOT NULL,   -- inclusive
    end_offset        bigint  NOT NULL,   -- exclusive
    messages_read     bigint  NOT NULL,
    rows_inserted     bigint  NOT NULL,
    rows_quarantined  bigint  NOT NULL,
    dagster_run_id    text,
    ingested_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kafka_topic, kafka_partition, start_offset, end_offset)
);
