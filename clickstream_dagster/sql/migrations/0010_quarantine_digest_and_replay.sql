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

-- Replay: a user repairs a quarantined message by writing its corrected value into repaired_payload (by SQL, or
-- through `clickstream quarantine replay`'s filters), and the replay_quarantine job re-ingests it exactly once
-- under its original source coordinates. The row stays, traced: replayed_at and replay_run_id say when and by
-- which run it moved into clickstream_events; a repair that is still invalid gets replay_error instead.
ALTER TABLE quarantine
    ADD COLUMN repaired_payload bytea,
    ADD COLUMN replayed_at      timestamptz,
    ADD COLUMN replay_run_id    text,
    ADD COLUMN replay_error     text;

-- Writing a new repair clears the error of the last one, so it is tried again.
CREATE FUNCTION quarantine_repair_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.repaired_payload IS DISTINCT FROM OLD.repaired_payload THEN
        NEW.replay_error := NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER quarantine_repair_changed BEFORE UPDATE OF repaired_payload ON quarantine
    FOR EACH ROW EXECUTE FUNCTION quarantine_repair_changed();

CREATE INDEX quarantine_replay_pending_idx ON quarantine (id)
    WHERE repaired_payload IS NOT NULL AND replayed_at IS NULL;
