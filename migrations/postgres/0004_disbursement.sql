-- Subsidy disbursement: programmes, batches with their four-eyes steps, and one row per
-- beneficiary line. Same conventions as 0001 (kept side by side with migrations/sqlite).
-- Citizen ID numbers never appear in clear: a keyed HMAC-SHA256 for duplicate checks, an
-- AES-256-GCM sealed copy for the owning office, and the masked form for everyone else.

-- A programme pays from one funding wallet within a budget. `committed_fen` is what approved
-- batches have reserved (released again for lines that definitely failed); the CHECK and the
-- guarded UPDATE that raises it keep it within the budget.
-- `designated_merchants` lists the wallet ids the money may be spent at (comma-separated,
-- empty for none): recorded and shown to the operator side, enforced by the operator.
CREATE TABLE subsidy_programmes (
    id                   TEXT PRIMARY KEY,
    region_id            TEXT NOT NULL REFERENCES regions (id),
    name                 TEXT NOT NULL,
    funding_wallet_id    TEXT NOT NULL,
    budget_fen           BIGINT NOT NULL CHECK (budget_fen > 0),
    committed_fen        BIGINT NOT NULL DEFAULT 0,
    per_payment_cap_fen  BIGINT NOT NULL CHECK (per_payment_cap_fen > 0),
    per_period_cap_fen   BIGINT NOT NULL CHECK (per_period_cap_fen > 0),
    designated_merchants TEXT NOT NULL,
    starts_on            TEXT NOT NULL,
    ends_on              TEXT NOT NULL,
    created_by           TEXT NOT NULL,
    created_at_ms        BIGINT NOT NULL,
    CHECK (committed_fen >= 0 AND committed_fen <= budget_fen),
    CHECK (starts_on <= ends_on)
);
CREATE INDEX subsidy_programmes_region_idx ON subsidy_programmes (region_id);

-- One uploaded file. The uploader's idempotency key is unique per uploader, so the same file
-- sent twice is one batch. Who moved the batch, and when, is in subsidy_batch_steps.
CREATE TABLE subsidy_batches (
    id               TEXT PRIMARY KEY,
    programme_id     TEXT NOT NULL REFERENCES subsidy_programmes (id),
    period           TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    upload_sha256    TEXT NOT NULL,
    uploaded_by      TEXT NOT NULL,
    encoding         TEXT NOT NULL CHECK (encoding IN ('utf8', 'utf8_bom', 'gb18030')),
    chinese_headers  BIGINT NOT NULL CHECK (chinese_headers IN (0, 1)),
    status           TEXT NOT NULL CHECK (status IN ('draft', 'approved', 'running', 'paused', 'completed', 'cancelled')),
    line_count       BIGINT NOT NULL CHECK (line_count > 0),
    total_fen        BIGINT NOT NULL CHECK (total_fen > 0),
    version          BIGINT NOT NULL,
    created_at_ms    BIGINT NOT NULL,
    updated_at_ms    BIGINT NOT NULL,
    CONSTRAINT subsidy_batches_uploader_key UNIQUE (uploaded_by, idempotency_key)
);
CREATE INDEX subsidy_batches_programme_idx ON subsidy_batches (programme_id, period);
CREATE INDEX subsidy_batches_status_idx ON subsidy_batches (status);

-- Every state change of a batch: who (token id and label) and when.
CREATE TABLE subsidy_batch_steps (
    batch_id      TEXT NOT NULL REFERENCES subsidy_batches (id),
    seq           BIGINT NOT NULL,
    from_status   TEXT,
    to_status     TEXT NOT NULL,
    actor_token   TEXT NOT NULL,
    actor_label   TEXT NOT NULL,
    at_ms         BIGINT NOT NULL,
    CONSTRAINT subsidy_batch_steps_pkey PRIMARY KEY (batch_id, seq)
);

-- One beneficiary payment. `seq` numbers lines within the batch (file lines first, re-issues
-- after them); `out_transfer_no` is fixed here, before the operator is ever asked, so every
-- retry, query and restart names the same transfer. `generation` is 0 for a line from the file
-- and n for its n-th re-issue, so the same person is unique per batch and generation.
-- `next_attempt_at_ms` is set while the line still needs the operator; the lease keeps two
-- instances from sending or querying it at once.
CREATE TABLE subsidy_lines (
    batch_id           TEXT NOT NULL REFERENCES subsidy_batches (id),
    seq                BIGINT NOT NULL,
    file_line          BIGINT NOT NULL,
    generation         BIGINT NOT NULL,
    reissue_of_seq     BIGINT,
    reissued_as_seq    BIGINT,
    payee_name         TEXT NOT NULL,
    name_masked        TEXT NOT NULL,
    citizen_id_hmac    TEXT NOT NULL,
    citizen_id_sealed  TEXT NOT NULL,
    citizen_id_masked  TEXT NOT NULL,
    wallet_id          TEXT NOT NULL,
    amount_fen         BIGINT NOT NULL CHECK (amount_fen > 0),
    memo               TEXT NOT NULL,
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
    CONSTRAINT subsidy_lines_person_key UNIQUE (batch_id, citizen_id_hmac, generation)
);
CREATE INDEX subsidy_lines_person_idx ON subsidy_lines (citizen_id_hmac);
CREATE INDEX subsidy_lines_batch_status_idx ON subsidy_lines (batch_id, status, seq);
CREATE INDEX subsidy_lines_due_idx ON subsidy_lines (next_attempt_at_ms) WHERE next_attempt_at_ms IS NOT NULL;
