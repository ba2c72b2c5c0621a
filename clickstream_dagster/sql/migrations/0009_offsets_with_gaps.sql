-- Offsets are not dense: every offset of a range is accounted for, and the ledger is proven gap-free.
--
-- Transaction markers, aborted transactions, compaction and retention all leave offsets that carry no message,
-- so a range's size is an upper bound on its messages. The ledger records what each offset of a range held:
--     messages_read + skipped_control + skipped_aborted + skipped_compacted + lost_retention = end - start
-- and messages_read = rows stored + rows quarantined. Offsets lost to retention before they were read are
-- counted, never silent (a blocking check fails on them).

ALTER TABLE ingested_ranges
    ADD COLUMN skipped_control   bigint NOT NULL DEFAULT 0,  -- transaction commit/abort markers
    ADD COLUMN skipped_aborted   bigint NOT NULL DEFAULT 0,  -- records of aborted transactions
    ADD COLUMN skipped_compacted bigint NOT NULL DEFAULT 0,  -- removed by log compaction
    ADD COLUMN lost_retention    bigint NOT NULL DEFAULT 0;  -- deleted (retention, DeleteRecords) before read

-- What the Kafka sensor has requested, per partition: from where ingestion started up to the sensor's cursor.
-- The contiguity check proves that the ledger covers exactly [first_offset, planned_to) per partition.
CREATE TABLE ingestion_plan (
    kafka_topic     text        NOT NULL,
    kafka_partition integer     NOT NULL,
    first_offset    bigint      NOT NULL,
    planned_to      bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kafka_topic, kafka_partition),
    CHECK (planned_to >= first_offset)
);

-- Gaps of the ledger that the sensor requested again (self-healing), with bounded attempts and backoff.
CREATE TABLE ingestion_repairs (
    kafka_topic     text        NOT NULL,
    kafka_partition integer     NOT NULL,
    start_offset    bigint      NOT NULL,
    end_offset      bigint      NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    last_run_key    text,
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    last_attempt_at timestamptz,
    PRIMARY KEY (kafka_topic, kafka_partition, start_offset, end_offset)
);
