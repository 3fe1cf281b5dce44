-- The payload store: the sealed content of private records (src/vault.rs;
-- see the PostgreSQL migration 0006). The database runs with
-- `secure_delete`, so cleared content is overwritten in the file.
CREATE TABLE payloads (
    log         TEXT NOT NULL,
    idx         INTEGER NOT NULL CHECK (idx >= 0),
    kek_id      TEXT,
    wrapped_key BLOB,
    ciphertext  BLOB,
    erased_by   INTEGER CHECK (erased_by > idx),
    disclosure  BLOB CHECK (length(disclosure) = 32),
    PRIMARY KEY (log, idx),
    CHECK ((erased_by IS NULL) = (ciphertext IS NOT NULL)
        AND (kek_id IS NULL) = (ciphertext IS NULL)
        AND (wrapped_key IS NULL) = (ciphertext IS NULL))
) WITHOUT ROWID;

-- Agencies that may erase the content of any private record (PostgreSQL 0006).
ALTER TABLE agencies ADD COLUMN eraser INTEGER NOT NULL DEFAULT 0 CHECK (eraser IN (0, 1));

-- The entries the log made about each private record (see PostgreSQL 0006).
CREATE TABLE payload_events (
    log         TEXT NOT NULL,
    record      INTEGER NOT NULL CHECK (record >= 0),
    idx         INTEGER NOT NULL CHECK (idx > record),
    PRIMARY KEY (log, record, idx)
) WITHOUT ROWID;
