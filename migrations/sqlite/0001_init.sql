-- Stele schema for SQLite (the embedded default).
--
-- Same model as the PostgreSQL schema: the `logs` row's `tree_size` moves
-- forward only by compare-and-set, in the transaction that writes the
-- batch's entries, tiles and checkpoint. Times are milliseconds since the
-- Unix epoch; hashes are 32-byte blobs.

CREATE TABLE logs (
    name        TEXT PRIMARY KEY NOT NULL,
    origin      TEXT NOT NULL,
    tree_size   INTEGER NOT NULL DEFAULT 0 CHECK (tree_size >= 0),
    root        BLOB CHECK (root IS NULL OR length(root) = 32),
    checkpoint  TEXT,
    last_ts     INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE entries (
    log         TEXT NOT NULL REFERENCES logs (name),
    idx         INTEGER NOT NULL CHECK (idx >= 0),
    leaf        BLOB NOT NULL,
    leaf_hash   BLOB NOT NULL CHECK (length(leaf_hash) = 32),
    dedup_key   BLOB NOT NULL CHECK (length(dedup_key) = 32),
    ts          INTEGER NOT NULL,
    PRIMARY KEY (log, idx),
    UNIQUE (log, dedup_key)
) STRICT, WITHOUT ROWID;

CREATE INDEX entries_leaf_hash ON entries (log, leaf_hash);

-- One row per hash tile (level, idx); a partial tile's row grows in place and
-- is never replaced by narrower data.
CREATE TABLE tiles (
    log         TEXT NOT NULL REFERENCES logs (name),
    level       INTEGER NOT NULL CHECK (level >= 0),
    idx         INTEGER NOT NULL CHECK (idx >= 0),
    data        BLOB NOT NULL,
    PRIMARY KEY (log, level, idx)
) STRICT, WITHOUT ROWID;

CREATE TABLE checkpoints (
    log         TEXT NOT NULL REFERENCES logs (name),
    tree_size   INTEGER NOT NULL CHECK (tree_size >= 0),
    note        TEXT NOT NULL,
    PRIMARY KEY (log, tree_size)
) STRICT, WITHOUT ROWID;

-- `types` is a JSON array of record-type patterns.
CREATE TABLE agencies (
    name        TEXT PRIMARY KEY NOT NULL,
    token_hash  BLOB NOT NULL CHECK (length(token_hash) = 32),
    types       TEXT NOT NULL DEFAULT '[]',
    revoked     INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
    created     INTEGER NOT NULL
) STRICT;
