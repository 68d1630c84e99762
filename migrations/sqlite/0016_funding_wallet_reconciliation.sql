-- Reconciliation of a programme's funding wallet (kept side by side with migrations/postgres).
--
-- A statement's wallet is a facility's merchant wallet or a programme's funding wallet; a
-- run names whichever owns it. Exactly one of the two is set. SQLite cannot drop NOT NULL or
-- change a CHECK in place, so both tables are rebuilt with their rows; the foreign keys that
-- point at them are checked when the migration commits, against the rebuilt tables.
PRAGMA defer_foreign_keys = ON;

CREATE TABLE reconciliation_runs_0016 (
    id            TEXT PRIMARY KEY,
    wallet_id     TEXT NOT NULL,
    facility_id   TEXT REFERENCES facilities (id),
    programme_id  TEXT REFERENCES subsidy_programmes (id),
    business_day  TEXT NOT NULL,
    file_id       TEXT NOT NULL REFERENCES statement_files (id),
    past_grace    BIGINT NOT NULL CHECK (past_grace IN (0, 1)),
    summary       TEXT NOT NULL,
    started_by    TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    CONSTRAINT reconciliation_runs_file_grace_key UNIQUE (file_id, past_grace),
    CONSTRAINT reconciliation_runs_owner_check CHECK ((facility_id IS NULL) <> (programme_id IS NULL))
);
INSERT INTO reconciliation_runs_0016 (id, wallet_id, facility_id, business_day, file_id, past_grace, summary,
    started_by, created_at_ms)
SELECT id, wallet_id, facility_id, business_day, file_id, past_grace, summary, started_by, created_at_ms
FROM reconciliation_runs;
DROP TABLE reconciliation_runs;
ALTER TABLE reconciliation_runs_0016 RENAME TO reconciliation_runs;
CREATE INDEX reconciliation_runs_day_idx ON reconciliation_runs (wallet_id, business_day, created_at_ms);

-- A transfer that bounced back (the statement's TRANSFER_RETURN: a closed or frozen wallet)
-- re-opens its line: `returned`, with the operator's reason and reference and when it came
-- back, its amount released from the programme's budget so the office can re-issue it.
CREATE TABLE subsidy_lines_0016 (
    batch_id           TEXT NOT NULL REFERENCES subsidy_batches (id),
    seq                BIGINT NOT NULL,
    file_line          BIGINT NOT NULL,
    generation         BIGINT NOT NULL,
    reissue_of_seq     BIGINT,
    reissued_as_seq    BIGINT,
    payee_name         TEXT,
    name_masked        TEXT,
    citizen_id_hmac    TEXT,
    citizen_id_sealed  TEXT,
    citizen_id_masked  TEXT,
    wallet_id          TEXT,
    amount_fen         BIGINT NOT NULL CHECK (amount_fen > 0),
    memo               TEXT,
    out_transfer_no    TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('pending', 'sending', 'succeeded', 'failed', 'returned')),
    fail_code          TEXT,
    transfer_no        TEXT,
    succeeded_at_ms    BIGINT,
    attempts           BIGINT NOT NULL DEFAULT 0,
    next_attempt_at_ms BIGINT,
    lease_owner        TEXT,
    lease_until_ms     BIGINT,
    updated_at_ms      BIGINT NOT NULL,
    returned_at_ms     BIGINT,
    return_reason      TEXT,
    return_operator_ref TEXT,
    CONSTRAINT subsidy_lines_pkey PRIMARY KEY (batch_id, seq),
    CONSTRAINT subsidy_lines_out_transfer_no_key UNIQUE (out_transfer_no),
    CONSTRAINT subsidy_lines_return_check CHECK ((status = 'returned') = (returned_at_ms IS NOT NULL)),
    CONSTRAINT subsidy_lines_data_check CHECK (
        (payee_name IS NULL AND name_masked IS NULL AND citizen_id_hmac IS NULL AND citizen_id_sealed IS NULL
         AND citizen_id_masked IS NULL AND wallet_id IS NULL AND memo IS NULL)
        OR (payee_name IS NOT NULL AND name_masked IS NOT NULL AND citizen_id_hmac IS NOT NULL
            AND citizen_id_sealed IS NOT NULL AND citizen_id_masked IS NOT NULL AND wallet_id IS NOT NULL
            AND memo IS NOT NULL)
    )
);
INSERT INTO subsidy_lines_0016 (batch_id, seq, file_line, generation, reissue_of_seq, reissued_as_seq, payee_name,
    name_masked, citizen_id_hmac, citizen_id_sealed, citizen_id_masked, wallet_id, amount_fen, memo, out_transfer_no,
    status, fail_code, transfer_no, succeeded_at_ms, attempts, next_attempt_at_ms, lease_owner, lease_until_ms,
    updated_at_ms)
SELECT batch_id, seq, file_line, generation, reissue_of_seq, reissued_as_seq, payee_name, name_masked,
    citizen_id_hmac, citizen_id_sealed, citizen_id_masked, wallet_id, amount_fen, memo, out_transfer_no, status,
    fail_code, transfer_no, succeeded_at_ms, attempts, next_attempt_at_ms, lease_owner, lease_until_ms, updated_at_ms
FROM subsidy_lines;
DROP TABLE subsidy_lines;
ALTER TABLE subsidy_lines_0016 RENAME TO subsidy_lines;

CREATE UNIQUE INDEX subsidy_lines_person_key ON subsidy_lines (batch_id, citizen_id_hmac, generation)
    WHERE citizen_id_hmac IS NOT NULL;
CREATE INDEX subsidy_lines_person_idx ON subsidy_lines (citizen_id_hmac) WHERE citizen_id_hmac IS NOT NULL;
CREATE INDEX subsidy_lines_batch_status_idx ON subsidy_lines (batch_id, status, seq);
CREATE INDEX subsidy_lines_pending_idx ON subsidy_lines (batch_id, seq) WHERE status = 'pending';
CREATE INDEX subsidy_lines_sending_due_idx ON subsidy_lines (next_attempt_at_ms) WHERE status = 'sending';

-- What a funding wallet's day reads: its transfers by when they settled and its returns by
-- when they came back. Partial: lines still being paid are never asked for.
CREATE INDEX subsidy_lines_settled_idx ON subsidy_lines (succeeded_at_ms)
    WHERE status IN ('succeeded', 'returned');
CREATE INDEX subsidy_lines_returned_idx ON subsidy_lines (returned_at_ms) WHERE status = 'returned';
CREATE INDEX subsidy_programmes_funding_wallet_idx ON subsidy_programmes (funding_wallet_id);
