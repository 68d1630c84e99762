-- Batch files stored as immutable chunks, with a line's own row made only when execution claims
-- it (kept side by side with migrations/sqlite).
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
-- see the other's people: two concurrent uploads naming the same person cannot both pass. A
-- plain row lock, which holds across any number of instances without advisory locks.
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
    lines              BYTEA NOT NULL,
    citizen_ids_sealed TEXT NOT NULL,
    CONSTRAINT subsidy_line_chunks_pkey PRIMARY KEY (batch_id, first_seq)
);
-- Out of line and uncompressed: the bytes are dense already (and the sealed part is random),
-- so compressing them costs the upload time and saves little.
ALTER TABLE subsidy_line_chunks ALTER COLUMN lines SET STORAGE EXTERNAL;
ALTER TABLE subsidy_line_chunks ALTER COLUMN citizen_ids_sealed SET STORAGE EXTERNAL;

-- The people of a chunked batch for duplicate checks: every line's (keyed digest of the ID
-- number, seq, amount), sorted by digest across the whole batch and cut into numbered parts, so
-- a later upload of the same programme and period merges against it in one ordered pass.
CREATE TABLE subsidy_batch_people (
    batch_id TEXT NOT NULL REFERENCES subsidy_batches (id),
    part     BIGINT NOT NULL,
    entries  BYTEA NOT NULL,
    CONSTRAINT subsidy_batch_people_pkey PRIMARY KEY (batch_id, part)
);
ALTER TABLE subsidy_batch_people ALTER COLUMN entries SET STORAGE EXTERNAL;

-- How many file lines the batch keeps in chunks (0 for batches stored line by line), and how
-- many of them execution has claimed: claims take the next lines in order by raising
-- `claimed_lines` in the transaction that inserts their rows.
ALTER TABLE subsidy_batches ADD COLUMN chunked_lines BIGINT NOT NULL DEFAULT 0;
ALTER TABLE subsidy_batches ADD COLUMN claimed_lines BIGINT NOT NULL DEFAULT 0;
ALTER TABLE subsidy_batches ADD CONSTRAINT subsidy_batches_claimed_lines_check
    CHECK (claimed_lines >= 0 AND claimed_lines <= chunked_lines);

-- The row of a chunked line holds its state (and amount, which its ledger entry needs); its
-- name, wallet, memo and person stay in the chunk. Either all of these are present or none.
ALTER TABLE subsidy_lines
    ALTER COLUMN payee_name DROP NOT NULL,
    ALTER COLUMN name_masked DROP NOT NULL,
    ALTER COLUMN citizen_id_hmac DROP NOT NULL,
    ALTER COLUMN citizen_id_sealed DROP NOT NULL,
    ALTER COLUMN citizen_id_masked DROP NOT NULL,
    ALTER COLUMN wallet_id DROP NOT NULL,
    ALTER COLUMN memo DROP NOT NULL;
ALTER TABLE subsidy_lines ADD CONSTRAINT subsidy_lines_data_check CHECK (
    (payee_name IS NULL AND name_masked IS NULL AND citizen_id_hmac IS NULL AND citizen_id_sealed IS NULL
     AND citizen_id_masked IS NULL AND wallet_id IS NULL AND memo IS NULL)
    OR (payee_name IS NOT NULL AND name_masked IS NOT NULL AND citizen_id_hmac IS NOT NULL
        AND citizen_id_sealed IS NOT NULL AND citizen_id_masked IS NOT NULL AND wallet_id IS NOT NULL
        AND memo IS NOT NULL)
);

-- Person indexes only over rows that carry a person: a chunked line's row has none to index.
ALTER TABLE subsidy_lines DROP CONSTRAINT subsidy_lines_person_key;
CREATE UNIQUE INDEX subsidy_lines_person_key ON subsidy_lines (batch_id, citizen_id_hmac, generation)
    WHERE citizen_id_hmac IS NOT NULL;
DROP INDEX subsidy_lines_person_idx;
CREATE INDEX subsidy_lines_person_idx ON subsidy_lines (citizen_id_hmac) WHERE citizen_id_hmac IS NOT NULL;
-- Superseded by subsidy_lines_sending_due_idx (0008); no query reads it, every claim wrote it.
DROP INDEX subsidy_lines_due_idx;
