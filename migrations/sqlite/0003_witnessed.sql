-- The latest checkpoint a quorum of the log's witnesses cosigned (see the
-- PostgreSQL migration 0005). SQLite cannot add a table constraint to an
-- existing table; LogWriter::store_witnessed always sets both columns.
ALTER TABLE logs ADD COLUMN witnessed_size INTEGER CHECK (witnessed_size >= 0);
ALTER TABLE logs ADD COLUMN witnessed_note TEXT;
