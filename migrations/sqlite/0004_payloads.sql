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

-- The entries the log made about each private record (see PostgreSQL 0006).
CREATE TABLE payload_events (
    log         TEXT NOT NULL,
    record      INTEGER NOT NULL CHECK (record >= 0),
    idx         INTEGER NOT NULL CHECK (idx > record),
    PRIMARY KEY (log, record, idx)
) WITHOUT ROWID;
