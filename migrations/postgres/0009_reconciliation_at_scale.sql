-- Reconciliation of a million-line day (issue 6's benchmark). Kept side by side with
-- migrations/sqlite.

-- A statement file's bytes, in parts of 1 MiB in order. PostgreSQL takes a 130 MB file as
-- parts in half the time it takes it as one value. statement_files.content is empty for a
-- file kept in parts; files kept before this migration keep their bytes there.
CREATE TABLE statement_file_parts (
    file_id TEXT NOT NULL REFERENCES statement_files (id),
    part_no BIGINT NOT NULL CHECK (part_no >= 0),
    content BYTEA NOT NULL,
    PRIMARY KEY (file_id, part_no)
);
-- lz4 compresses a file several times faster than PostgreSQL's default pglz (a 130 MB day:
-- 0.2 s against 0.9 s) and still to a fraction of its size. A server built without lz4
-- keeps the parts uncompressed instead: no CPU spent at all.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE statement_file_parts ALTER COLUMN content SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported OR syntax_error THEN
    EXECUTE 'ALTER TABLE statement_file_parts ALTER COLUMN content SET STORAGE EXTERNAL';
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
-- lz4 still halves the chunks, in less time than writing the other half would take; without
-- lz4 they are stored as they are.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE reconciliation_result_chunks ALTER COLUMN content SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported OR syntax_error THEN
    EXECUTE 'ALTER TABLE reconciliation_result_chunks ALTER COLUMN content SET STORAGE EXTERNAL';
END
$$;

-- Every query on discrepancies names the wallet and day (and mostly the category), which
-- the unique key (wallet_id, business_day, category, identity) leads with: the two other
-- indexes only cost time on a day that raises tens of thousands. A record expected on another
-- day is found by its identity (`carepay:<out_no>`), no longer by out_no.
DROP INDEX discrepancies_day_idx;
DROP INDEX discrepancies_out_no_idx;
