-- clickstream_events partitioned by month of event time, so that retention drops whole months (the
-- `housekeeping` job's drop_expired_events, ingestion/retention.py) instead of deleting rows.
--
-- Why event time and not ingest time: a Kafka message's event time never changes, so every copy of one message
-- would land in the same month. The unique key must hold the partition key ("timestamp"), and with it the key
-- (topic, partition, offset, timestamp) is as unique as (topic, partition, offset) was: a second load of a
-- message meets the first in its month, whatever the month. With ingest time, a message loaded again a month
-- later would land in another partition, where no key sees the first copy. Event time also makes retention
-- mean what analysts expect (the data of an old month goes), and a query bounded in event time (the training
-- window, the dashboard's last day) reads only its months.
--
-- Months are created on demand by the loading code (ingestion/partitions.py), each with its own copy of the
-- indexes below. A month that retention dropped is never created again: its rows are refused (the ledger
-- still proves them) instead of loaded twice. Rows are moved here once from the table of before.

ALTER TABLE clickstream_events RENAME TO clickstream_events_before_0017;
ALTER TABLE clickstream_events_before_0017 RENAME CONSTRAINT clickstream_events_source_uq TO clickstream_events_before_0017_source_uq;
ALTER INDEX clickstream_events_pkey RENAME TO clickstream_events_before_0017_pkey;
ALTER INDEX clickstream_events_created_at_brin RENAME TO clickstream_events_before_0017_created_at_brin;
ALTER INDEX clickstream_events_timestamp_brin RENAME TO clickstream_events_before_0017_timestamp_brin;
ALTER INDEX clickstream_events_visitor_event_time_idx RENAME TO clickstream_events_before_0017_visitor_idx;

-- `id` (the tie-break of the live table's and the visitor history's orderings) keeps coming from one
-- sequence; a partitioned table cannot have a primary key without the partition key, and nothing needs one.
CREATE SEQUENCE clickstream_events_row_id_seq AS bigint;
SELECT setval('clickstream_events_row_id_seq',
              coalesce((SELECT max(id) FROM clickstream_events_before_0017), 0) + 1, false);

CREATE TABLE clickstream_events (
    id              bigint      NOT NULL DEFAULT nextval('clickstream_events_row_id_seq'),
    "timestamp"     bigint      NOT NULL,
    event_time      timestamptz NOT NULL,
    visitorid       bigint      NOT NULL,
    event           text        NOT NULL,
    itemid          bigint      NOT NULL,
    transactionid   bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    produced_at     timestamptz,
    kafka_topic     text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    CONSTRAINT clickstream_events_source_uq UNIQUE (kafka_topic, kafka_partition, kafka_offset, "timestamp")
) PARTITION BY RANGE ("timestamp");
ALTER SEQUENCE clickstream_events_row_id_seq OWNED BY clickstream_events.id;
CREATE INDEX clickstream_events_visitor_event_time_idx ON clickstream_events (visitorid, event, "timestamp");
CREATE INDEX clickstream_events_created_at_brin ON clickstream_events USING brin (created_at)
    WITH (autosummarize = on);
CREATE INDEX clickstream_events_timestamp_brin ON clickstream_events USING brin ("timestamp");

-- The months retention dropped: never created again. The rows a month held stay proven by the ledger: each
-- ingested range counts the rows of it that retention dropped (rows stored = rows inserted - rows dropped),
-- and each visitor the events dropped (the sessions' checks add them to the visitor's stored events).
CREATE TABLE dropped_event_months (
    partition_name  text        PRIMARY KEY,
    from_ts         bigint      NOT NULL,  -- epoch ms, inclusive
    to_ts           bigint      NOT NULL,  -- epoch ms, exclusive
    rows_dropped    bigint      NOT NULL,
    dropped_at      timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE ingested_ranges ADD COLUMN rows_dropped bigint NOT NULL DEFAULT 0;
CREATE TABLE dropped_visitor_events (
    visitorid  bigint PRIMARY KEY,
    events     bigint NOT NULL
);

-- The months of the rows of before, then the rows.
DO $$
DECLARE
    month timestamp;
BEGIN
    FOR month IN
        SELECT DISTINCT date_trunc('month', to_timestamp("timestamp" / 1000.0) AT TIME ZONE 'UTC')
        FROM clickstream_events_before_0017
    LOOP
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF clickstream_events FOR VALUES FROM (%s) TO (%s)',
            'clickstream_events_' || to_char(month, 'YYYY_MM'),
            (extract(epoch FROM month) * 1000)::bigint,
            (extract(epoch FROM month + interval '1 month') * 1000)::bigint
        );
    END LOOP;
END $$;

INSERT INTO clickstream_events (id, "timestamp", event_time, visitorid, event, itemid, transactionid, created_at,
                                produced_at, kafka_topic, kafka_partition, kafka_offset)
SELECT id, "timestamp", event_time, visitorid, event, itemid, transactionid, created_at, produced_at,
       kafka_topic, kafka_partition, kafka_offset
FROM clickstream_events_before_0017
ORDER BY kafka_topic, kafka_partition, kafka_offset;

DROP TABLE clickstream_events_before_0017;
