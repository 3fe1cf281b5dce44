-- The latest checkpoint a quorum of the log's witnesses cosigned (the log's
-- signed note with the witnesses' cosignature lines), as published at
-- GET /logs/{log}/checkpoint when the log has a witness policy. Only the
-- writer's collector sets it, and only ever to a size at least as large as
-- the one stored and no larger than the tree (LogWriter::store_witnessed).
ALTER TABLE logs ADD COLUMN witnessed_size bigint CHECK (witnessed_size >= 0);
ALTER TABLE logs ADD COLUMN witnessed_note text;
ALTER TABLE logs ADD CONSTRAINT logs_witnessed_whole
    CHECK ((witnessed_size IS NULL) = (witnessed_note IS NULL));
