-- Daily reconciliation against the operator's wallet statements. Same conventions as 0001
-- (kept side by side with migrations/postgres): prefixed text ids, BIGINT fen and unix-ms
-- times, TEXT enumerations with CHECKs. The only difference is BLOB (here) for BYTEA.

-- Every statement file received, as received, with its SHA-256. A different file for the
-- same wallet and day is the next version; the same file again is the same row.
CREATE TABLE statement_files (
    id               TEXT PRIMARY KEY,
    wallet_id        TEXT NOT NULL,
    business_day     TEXT NOT NULL,
    version          BIGINT NOT NULL,
    sha256           TEXT NOT NULL,
    source           TEXT NOT NULL CHECK (source IN ('operator', 'upload', 'cli')),
    content          BLOB NOT NULL,
    byte_count       BIGINT NOT NULL,
    line_count       BIGINT NOT NULL,
    credit_total_fen BIGINT NOT NULL,
    debit_total_fen  BIGINT NOT NULL,
    fee_total_fen    BIGINT NOT NULL,
    imported_by      TEXT NOT NULL,
    imported_at_ms   BIGINT NOT NULL,
    CONSTRAINT statement_files_digest_key UNIQUE (wallet_id, business_day, sha256),
    CONSTRAINT statement_files_version_key UNIQUE (wallet_id, business_day, version)
);

-- One run per file and grace state: running the same file again returns this row, so a
-- re-run never books twice; once the grace period passes a new run turns "expected" into
-- "missing in statement".
CREATE TABLE reconciliation_runs (
    id            TEXT PRIMARY KEY,
    wallet_id     TEXT NOT NULL,
    facility_id   TEXT NOT NULL REFERENCES facilities (id),
    business_day  TEXT NOT NULL,
    file_id       TEXT NOT NULL REFERENCES statement_files (id),
    past_grace    BIGINT NOT NULL CHECK (past_grace IN (0, 1)),
    summary       TEXT NOT NULL,
    started_by    TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    CONSTRAINT reconciliation_runs_file_grace_key UNIQUE (file_id, past_grace)
);
CREATE INDEX reconciliation_runs_day_idx ON reconciliation_runs (wallet_id, business_day, created_at_ms);

-- The line-level result: every statement line and every carepay record of the day, once.
CREATE TABLE reconciliation_lines (
    run_id               TEXT NOT NULL REFERENCES reconciliation_runs (id),
    seq                  BIGINT NOT NULL,
    category             TEXT NOT NULL,
    fields               TEXT NOT NULL,
    line_no              BIGINT,
    out_no               TEXT NOT NULL,
    operator_ref         TEXT,
    statement_kind       TEXT,
    statement_status     TEXT,
    statement_amount_fen BIGINT,
    statement_fee_fen    BIGINT,
    settled_at           TEXT,
    carepay_kind         TEXT,
    carepay_status       TEXT,
    carepay_amount_fen   BIGINT,
    carepay_fee_fen      BIGINT,
    carepay_business_day TEXT,
    PRIMARY KEY (run_id, seq)
);

-- What an accountant must act on. `identity` names the item across runs of the same day
-- (the statement's operator reference, or carepay's merchant number), so a re-run finds the
-- discrepancy it already raised instead of raising it twice.
CREATE TABLE discrepancies (
    id             TEXT PRIMARY KEY,
    wallet_id      TEXT NOT NULL,
    business_day   TEXT NOT NULL,
    run_id         TEXT NOT NULL REFERENCES reconciliation_runs (id),
    category       TEXT NOT NULL,
    identity       TEXT NOT NULL,
    out_no         TEXT NOT NULL,
    fields         TEXT NOT NULL,
    amount_fen     BIGINT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('open', 'resolved')),
    resolution     TEXT CHECK (resolution IN ('adjusted', 'operator_error', 'timing', 'other')),
    note           TEXT,
    adjustment_fen BIGINT,
    resolved_by    TEXT,
    resolved_at_ms BIGINT,
    version        BIGINT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    CONSTRAINT discrepancies_identity_key UNIQUE (wallet_id, business_day, category, identity)
);
CREATE INDEX discrepancies_day_idx ON discrepancies (wallet_id, business_day, status);
CREATE INDEX discrepancies_out_no_idx ON discrepancies (wallet_id, out_no, status);

-- A wallet's business day: open until an accountant closes it with nothing open.
CREATE TABLE reconciliation_days (
    wallet_id     TEXT NOT NULL,
    business_day  TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('open', 'closed')),
    closed_by     TEXT,
    closed_at_ms  BIGINT,
    version       BIGINT NOT NULL,
    PRIMARY KEY (wallet_id, business_day)
);

-- Who did what when: imports, runs, resolutions, closing.
CREATE TABLE reconciliation_actions (
    id           TEXT PRIMARY KEY,
    wallet_id    TEXT NOT NULL,
    business_day TEXT NOT NULL,
    action       TEXT NOT NULL,
    object_id    TEXT NOT NULL,
    actor        TEXT NOT NULL,
    detail       TEXT NOT NULL,
    at_ms        BIGINT NOT NULL
);
CREATE INDEX reconciliation_actions_day_idx ON reconciliation_actions (wallet_id, business_day, at_ms);

-- The scheduled fetch: one lease per wallet and day so two instances do not fetch twice.
CREATE TABLE statement_fetches (
    wallet_id        TEXT NOT NULL,
    business_day     TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'done')),
    attempts         BIGINT NOT NULL,
    next_attempt_ms  BIGINT NOT NULL,
    last_error       TEXT,
    lease_owner      TEXT,
    lease_until_ms   BIGINT,
    PRIMARY KEY (wallet_id, business_day)
);
