-- Cheaper inserts into `entries` (profiled in BENCHMARKS.md).
--
-- 1. No per-row foreign keys. Rows of `entries`, `tiles` and `checkpoints`
--    are only ever written by `commit_batch`, in the same statement as the
--    compare-and-set on their `logs` row and only if it matched (an unknown
--    log matches nothing and writes nothing), so the keys guarded nothing
--    while their triggers cost a look-up and a lock on `logs` per entry.
ALTER TABLE entries DROP CONSTRAINT entries_log_fkey;
ALTER TABLE tiles DROP CONSTRAINT tiles_log_fkey;
ALTER TABLE checkpoints DROP CONSTRAINT checkpoints_log_fkey;

-- 2. The hash first in the two hash-keyed indexes: a comparison is then
--    decided by the (fixed-width, random) hash alone instead of comparing the
--    log name first on every step of every insert. Same uniqueness, same
--    look-ups (`log = $1 AND dedup_key = ...`, `log = $1 AND leaf_hash = $2`).
ALTER TABLE entries DROP CONSTRAINT entries_log_dedup_key_key;
ALTER TABLE entries ADD CONSTRAINT entries_dedup_key_log_key UNIQUE (dedup_key, log);
DROP INDEX entries_leaf_hash;
CREATE INDEX entries_leaf_hash ON entries (leaf_hash, log);
