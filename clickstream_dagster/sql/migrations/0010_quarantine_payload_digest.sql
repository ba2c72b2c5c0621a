-- A quarantined payload is never stored whole when oversized: compression lets a client push a value far past
-- the 16 KiB message limit. Every quarantined Kafka row records the payload's original size and sha256; an
-- oversized one keeps only a prefix in raw_payload (payload_truncated).

ALTER TABLE quarantine
    ADD COLUMN payload_bytes     integer,
    ADD COLUMN payload_sha256    bytea,
    ADD COLUMN payload_truncated boolean NOT NULL DEFAULT false;

UPDATE quarantine
SET payload_bytes = length(raw_payload), payload_sha256 = sha256(raw_payload)
WHERE raw_payload IS NOT NULL;
