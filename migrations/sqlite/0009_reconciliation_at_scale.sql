-- Reconciliation of a million-line day (issue 6's benchmark). Kept side by side with
-- migrations/postgres (which also picks how the parts are compressed).

-- A statement file's bytes, in parts of 1 MiB in order. statement_files.content is empty for
-- a file kept in parts; files kept before this migration keep their bytes there.
CREATE TABLE statement_file_parts (
    file_id TEXT NOT NULL REFERENCES statement_files (id),
    part_no BIGINT NOT NULL CHECK (part_no >= 0),
    content BLOB NOT NULL,
    PRIMARY KEY (file_id, part_no)
);

-- A run's line-level result: chunks of consecutive lines (`seq` first_seq up to
-- first_seq + line_count - 1), each one compact byte string written in the run's transaction
-- (src/store/reconciliation/results.rs has the layout). A million-line day is a few hundred
-- rows; a page of the result reads one or two. Runs made before this migration keep their
-- rows in reconciliation_lines, which readers fall back to.
CREATE TABLE reconciliation_result_chunks (
    run_id     TEXT NOT NULL REFERENCES reconciliation_runs (id),
    first_seq  BIGINT NOT NULL CHECK (first_seq > 0),
    line_count BIGINT NOT NULL CHECK (line_count > 0),
    content    BLOB NOT NULL,
    PRIMARY KEY (run_id, first_seq)
);

-- Every query on discrepancies names the wallet and day (and mostly the category), which
-- the unique key (wallet_id, business_day, category, identity) leads with: the two other
-- indexes only cost time on a day that raises tens of thousands. A record expected on another
-- day is found by its identity (`carepay:<out_no>`), no longer by out_no.
DROP INDEX discrepancies_day_idx;
DROP INDEX discrepancies_out_no_idx;
