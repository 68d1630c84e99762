-- Reconciliation of a million-line day (issue 6's benchmark). Kept side by side with
-- migrations/postgres, which also changes how statement files are compressed (SQLite stores
-- them as they are).

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
