-- The record-type registry lives in the log itself: its entries are leaves
-- of the reserved type `stele.type`, and such a leaf, and only such a leaf,
-- ends with the 27 bytes `,"type":"stele.type","v":1}` (see the PostgreSQL
-- migration 0004). This partial index finds them without a scan.
CREATE INDEX entries_registry ON entries (log, idx)
    WHERE substr(leaf, -27) = X'2c2274797065223a227374656c652e74797065222c2276223a317d';

-- Agencies that may change a log's registry (POST /logs/{log}/types).
ALTER TABLE agencies ADD COLUMN registry_admin INTEGER NOT NULL DEFAULT 0 CHECK (registry_admin IN (0, 1));
