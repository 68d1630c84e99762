-- Reconciliation of a million-line day (issue 6's benchmark). Kept side by side with
-- migrations/sqlite.

-- A statement file is kept as received. lz4 compresses it several times faster than
-- PostgreSQL's default pglz (a 130 MB day: 0.2 s against 0.9 s) and still to a fraction of
-- its size. A server built without lz4 keeps new files uncompressed instead: no CPU spent,
-- and a slice of the file reads without the rest.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE statement_files ALTER COLUMN content SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported OR syntax_error THEN
    EXECUTE 'ALTER TABLE statement_files ALTER COLUMN content SET STORAGE EXTERNAL';
END
$$;

-- A run's line-level result: chunks of consecutive lines (`seq` first_seq up to
-- first_seq + line_count - 1), each one compact byte string written in the run's transaction
-- (src/store/reconciliation/results.rs has the layout). A million-line day is a few hundred
-- rows; a page of the result reads one or two. Runs made before this migration keep their
-- rows in reconciliation_lines, which readers fall back to.
CREATE TABLE reconciliation_result_chunks (
    run_id     TEXT NOT NULL REFERENCES reconciliation_runs (id),
    first_seq  BIGINT NOT NULL CHECK (first_seq > 0),
    line_count BIGINT NOT NULL CHECK (line_count > 0),
    content    BYTEA NOT NULL,
    PRIMARY KEY (run_id, first_seq)
);
-- The chunks are compact already: compressing them again would cost more than it saves.
ALTER TABLE reconciliation_result_chunks ALTER COLUMN content SET STORAGE EXTERNAL;
