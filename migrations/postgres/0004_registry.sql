-- The record-type registry lives in the log itself: its entries are leaves
-- of the reserved type `stele.type`. Such a leaf, and only such a leaf, ends
-- with the 27 bytes `,"type":"stele.type","v":1}` (the leaf is RFC 8785 JSON:
-- `v` is its last key, the top-level `type` the one before it unless a
-- `type_version` follows, and registry entries carry none). This partial
-- index finds them without a scan, so the registry is rebuilt from the
-- entries themselves at start-up and no second copy of it can disagree.
CREATE INDEX entries_registry ON entries (log, idx)
    WHERE substring(leaf FROM octet_length(leaf) - 26) = '\x2c2274797065223a227374656c652e74797065222c2276223a317d'::bytea;

-- Agencies that may change a log's registry (POST /logs/{log}/types).
ALTER TABLE agencies ADD COLUMN registry_admin boolean NOT NULL DEFAULT false;
