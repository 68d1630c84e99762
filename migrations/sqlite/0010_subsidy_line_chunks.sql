-- Batch files stored as immutable chunks, with a line's own row made only when execution claims
-- it (kept side by side with migrations/postgres).
--
-- An upload used to insert one indexed row per beneficiary, which bounded a 1,000,000-line file
-- by index maintenance, not by reading and checking it. Now the validated lines of a file are
-- written a few thousand per row (`subsidy_line_chunks`, layout in src/domain/line_chunk.rs),
-- its people as keyed digests sorted for the duplicate checks (`subsidy_batch_people`), and a
-- line gets its row in `subsidy_lines` when a worker claims it: inserted as `sending` with the
-- `out_transfer_no` the batch and line number fixed at upload. A file line without a row is
-- pending. Re-issued lines and lines uploaded before this migration keep full rows, so every
-- batch stored before it reads as it did.

-- Uploads and re-issues of one programme and period update this row first in their
-- transaction, so the later of two waits for the earlier to commit and its duplicate checks
-- see the other's people. (SQLite admits one writer anyway; the row keeps the SQL the same.)
CREATE TABLE subsidy_period_gates (
    programme_id TEXT NOT NULL REFERENCES subsidy_programmes (id),
    period       TEXT NOT NULL,
    version      BIGINT NOT NULL,
    CONSTRAINT subsidy_period_gates_pkey PRIMARY KEY (programme_id, period)
);

-- The file lines of a batch, in order: lines `first_seq .. first_seq + line_count - 1`.
-- `lines` holds everything but the ID numbers; `citizen_ids_sealed` is one AES-256-GCM sealed
-- value holding the chunk's ID numbers, bound to the batch and `first_seq`. Written once in
-- the upload's transaction, never updated except by key re-sealing.
CREATE TABLE subsidy_line_chunks (
    batch_id           TEXT NOT NULL REFERENCES subsidy_batches (id),
    first_seq          BIGINT NOT NULL CHECK (first_seq > 0),
    line_count         BIGINT NOT NULL CHECK (line_count > 0),
    lines              BLOB NOT NULL,
    citizen_ids_sealed TEXT NOT NULL,
    CONSTRAINT subsidy_line_chunks_pkey PRIMARY KEY (batch_id, first_seq)
);

-- The people of a chunked batch for duplicate checks: every line's (keyed digest of the ID
-- number, seq, amount), sorted by digest across the whole batch and cut into numbered parts, so
-- a later upload of the same programme and period merges against it in one ordered pass.
CREATE TABLE subsidy_batch_people (
    batch_id TEXT NOT NULL REFERENCES subsidy_batches (id),
    part     BIGINT NOT NULL,
    entries  BLOB NOT NULL,
    CONSTRAINT subsidy_batch_people_pkey PRIMARY KEY (batch_id, part)
);

-- How many file lines the batch keeps in chunks (0 for batches stored line by line), and how
-- many of them execution has claimed: claims take the next lines in order by raising
-- `claimed_lines` in the transaction that inserts their rows. (SQLite cannot add a table
-- CHECK to an existing table; the claim's UPDATE guards the bound.)
ALTER TABLE subsidy_batches ADD COLUMN chunked_lines BIGINT NOT NULL DEFAULT 0;
ALTER TABLE subsidy_batches ADD COLUMN claimed_lines BIGINT NOT NULL DEFAULT 0;

-- The row of a chunked line holds its state (and amount, which its ledger entry needs); its
-- name, wallet, memo and person stay in the chunk. Either all of these are present or none.
-- SQLite cannot drop NOT NULL in place, so the table is rebuilt with its rows.
CREATE TABLE subsidy_lines_0010 (
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
    status             TEXT NOT NULL CHECK (status IN ('pending', 'sending', 'succeeded', 'failed')),
    fail_code          TEXT,
    transfer_no        TEXT,
    succeeded_at_ms    BIGINT,
    attempts           BIGINT NOT NULL DEFAULT 0,
    next_attempt_at_ms BIGINT,
    lease_owner        TEXT,
    lease_until_ms     BIGINT,
    updated_at_ms      BIGINT NOT NULL,
    CONSTRAINT subsidy_lines_pkey PRIMARY KEY (batch_id, seq),
    CONSTRAINT subsidy_lines_out_transfer_no_key UNIQUE (out_transfer_no),
    CONSTRAINT subsidy_lines_data_check CHECK (
        (payee_name IS NULL AND name_masked IS NULL AND citizen_id_hmac IS NULL AND citizen_id_sealed IS NULL
         AND citizen_id_masked IS NULL AND wallet_id IS NULL AND memo IS NULL)
        OR (payee_name IS NOT NULL AND name_masked IS NOT NULL AND citizen_id_hmac IS NOT NULL
            AND citizen_id_sealed IS NOT NULL AND citizen_id_masked IS NOT NULL AND wallet_id IS NOT NULL
            AND memo IS NOT NULL)
    )
);
INSERT INTO subsidy_lines_0010 (batch_id, seq, file_line, generation, reissue_of_seq, reissued_as_seq, payee_name,
    name_masked, citizen_id_hmac, citizen_id_sealed, citizen_id_masked, wallet_id, amount_fen, memo, out_transfer_no,
    status, fail_code, transfer_no, succeeded_at_ms, attempts, next_attempt_at_ms, lease_owner, lease_until_ms,
    updated_at_ms)
SELECT batch_id, seq, file_line, generation, reissue_of_seq, reissued_as_seq, payee_name, name_masked,
    citizen_id_hmac, citizen_id_sealed, citizen_id_masked, wallet_id, amount_fen, memo, out_transfer_no, status,
    fail_code, transfer_no, succeeded_at_ms, attempts, next_attempt_at_ms, lease_owner, lease_until_ms, updated_at_ms
FROM subsidy_lines;
DROP TABLE subsidy_lines;
ALTER TABLE subsidy_lines_0010 RENAME TO subsidy_lines;

-- The indexes of 0004 and 0008, person indexes now only over rows that carry a person.
-- subsidy_lines_due_idx is not recreated: superseded by subsidy_lines_sending_due_idx, no query
-- reads it.
CREATE UNIQUE INDEX subsidy_lines_person_key ON subsidy_lines (batch_id, citizen_id_hmac, generation)
    WHERE citizen_id_hmac IS NOT NULL;
CREATE INDEX subsidy_lines_person_idx ON subsidy_lines (citizen_id_hmac) WHERE citizen_id_hmac IS NOT NULL;
CREATE INDEX subsidy_lines_batch_status_idx ON subsidy_lines (batch_id, status, seq);
CREATE INDEX subsidy_lines_pending_idx ON subsidy_lines (batch_id, seq) WHERE status = 'pending';
CREATE INDEX subsidy_lines_sending_due_idx ON subsidy_lines (next_attempt_at_ms) WHERE status = 'sending';
