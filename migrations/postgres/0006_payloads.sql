-- The payload store: the sealed content of private records (src/vault.rs).
-- A row is written by `commit_batch` in the same statement as its entry,
-- and erased (sealed columns cleared, `erased_by` set to the erasure
-- entry's index) in the same statement as that entry. The content is
-- never stored unsealed.
CREATE TABLE payloads (
    log         text NOT NULL,
    idx         bigint NOT NULL CHECK (idx >= 0),
    kek_id      text,
    wrapped_key bytea,
    ciphertext  bytea,
    erased_by   bigint CHECK (erased_by > idx),
    -- SHA-256 of the capability of the record's disclosure (the data
    -- subject's right to list who read the record), if one was issued.
    disclosure  bytea CHECK (octet_length(disclosure) = 32),
    PRIMARY KEY (log, idx),
    CONSTRAINT payloads_sealed_or_erased CHECK (
        (erased_by IS NULL) = (ciphertext IS NOT NULL)
        AND (kek_id IS NULL) = (ciphertext IS NULL)
        AND (wrapped_key IS NULL) = (ciphertext IS NULL))
);

-- Agencies that may erase the content of any private record of every log
-- (a data-protection officer), besides the agency that wrote it.
ALTER TABLE agencies ADD COLUMN eraser boolean NOT NULL DEFAULT false;

-- The entries the log made about each private record (its `stele.access`
-- and `stele.erasure` entries), written by `commit_batch` with them: what a
-- disclosure lists.
CREATE TABLE payload_events (
    log         text NOT NULL,
    record      bigint NOT NULL CHECK (record >= 0),
    idx         bigint NOT NULL CHECK (idx > record),
    PRIMARY KEY (log, record, idx)
);
