-- Stele schema for PostgreSQL.
--
-- A log's committed state is the `logs` row: `tree_size` only moves forward,
-- by compare-and-set, in the same transaction that writes the batch's
-- entries, tiles and checkpoint. Rows in `entries`, `tiles` and `checkpoints`
-- therefore never describe more than the tree size of a committed row.

CREATE TABLE logs (
    name        text PRIMARY KEY,
    origin      text NOT NULL,
    tree_size   bigint NOT NULL DEFAULT 0 CHECK (tree_size >= 0),
    root        bytea CHECK (octet_length(root) = 32),
    checkpoint  text,
    last_ts     timestamptz
);

CREATE TABLE entries (
    log         text NOT NULL REFERENCES logs (name),
    idx         bigint NOT NULL CHECK (idx >= 0),
    leaf        bytea NOT NULL,
    leaf_hash   bytea NOT NULL CHECK (octet_length(leaf_hash) = 32),
    dedup_key   bytea NOT NULL CHECK (octet_length(dedup_key) = 32),
    ts          timestamptz NOT NULL,
    PRIMARY KEY (log, idx),
    UNIQUE (log, dedup_key)
);

CREATE INDEX entries_leaf_hash ON entries (log, leaf_hash);

-- One row per hash tile (level, idx). A partial tile's row is overwritten as
-- it grows; it is never replaced by narrower data.
CREATE TABLE tiles (
    log         text NOT NULL REFERENCES logs (name),
    level       smallint NOT NULL CHECK (level >= 0),
    idx         bigint NOT NULL CHECK (idx >= 0),
    data        bytea NOT NULL,
    PRIMARY KEY (log, level, idx)
);

CREATE TABLE checkpoints (
    log         text NOT NULL REFERENCES logs (name),
    tree_size   bigint NOT NULL CHECK (tree_size >= 0),
    note        text NOT NULL,
    PRIMARY KEY (log, tree_size)
);

CREATE TABLE agencies (
    name        text PRIMARY KEY,
    token_hash  bytea NOT NULL CHECK (octet_length(token_hash) = 32),
    types       text[] NOT NULL DEFAULT '{}',
    revoked     boolean NOT NULL DEFAULT false,
    created     timestamptz NOT NULL
);
