-- Entries at scale: the two look-ups by a random 32-byte hash move from
-- B-trees to hash indexes (measured in BENCHMARKS.md, "Scale").
--
-- A B-tree entry for a 32-byte key plus the log name is ~60 bytes and its
-- inserts land on random pages; at 10M entries each such index is ~850 MB,
-- far beyond `shared_buffers`, so every insert misses the buffer cache and,
-- after each checkpoint, writes a full-page image to the WAL. A hash index
-- stores a 4-byte hash code per entry (~27 bytes with overhead): the same
-- look-ups with a third of the pages.
--
-- 1. Deduplication: uniqueness is kept by an exclusion constraint over a
--    hash index. Such an index has one column, so the log goes into the
--    stored key: `dedup_key` becomes SHA-256(log || 0x00 || key), computed
--    here for the rows already stored and by the backend for new ones (it
--    maps keys back when it answers `find_dedup`). A repeat still aborts the
--    whole `commit_batch` statement (SQLSTATE 23P01 → `Duplicate`).
ALTER TABLE entries DROP CONSTRAINT entries_dedup_key_log_key;
UPDATE entries SET dedup_key = sha256(convert_to(log, 'UTF8') || '\x00'::bytea || dedup_key);
ALTER TABLE entries ADD CONSTRAINT entries_dedup_key_excl EXCLUDE USING hash (dedup_key WITH =);

-- 2. Look-up by leaf hash (`log = $1 AND leaf_hash = $2`; the log is checked
--    on the row).
DROP INDEX entries_leaf_hash;
CREATE INDEX entries_leaf_hash ON entries USING hash (leaf_hash);
