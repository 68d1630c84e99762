-- Terminal payments: signed-request nonces, idempotency keys, payments, refunds, and the
-- operator notifications already processed. Same conventions as 0001 (kept side by side with migrations/sqlite).

-- Nonces seen from each terminal within the signature window; a repeat is a replay.
-- Rows past `expires_at_ms` are deleted in bounded batches by the payments worker.
CREATE TABLE terminal_nonces (
    terminal_id   TEXT NOT NULL REFERENCES terminals (id),
    nonce         TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    CONSTRAINT terminal_nonces_pkey PRIMARY KEY (terminal_id, nonce)
);
CREATE INDEX terminal_nonces_expiry_idx ON terminal_nonces (expires_at_ms);

-- One row per money-moving terminal request: the idempotency key. The digest is of the RPC
-- method and the exact request bytes, so a reused request_id with another body is refused.
CREATE TABLE terminal_requests (
    terminal_id    TEXT NOT NULL REFERENCES terminals (id),
    request_id     TEXT NOT NULL,
    request_sha256 TEXT NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('payment', 'refund', 'reversal')),
    object_id      TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    CONSTRAINT terminal_requests_pkey PRIMARY KEY (terminal_id, request_id)
);
CREATE INDEX terminal_requests_created_idx ON terminal_requests (created_at_ms);

-- A payment. `out_trade_no` is fixed before the operator is first asked, so every retry and
-- every query names the same charge. Refund money is reserved before a refund is sent and
-- released if it fails, so concurrent refunds can never exceed the payment.
-- `next_check_at_ms` is set while the outcome is not final: the worker asks the operator
-- then; `lease_*` keep two instances (or the request and the worker) from asking at once.
CREATE TABLE payments (
    id                  TEXT PRIMARY KEY,
    facility_id         TEXT NOT NULL REFERENCES facilities (id),
    terminal_id         TEXT NOT NULL REFERENCES terminals (id),
    request_id          TEXT NOT NULL,
    merchant_wallet_id  TEXT NOT NULL,
    out_trade_no        TEXT NOT NULL,
    method              TEXT NOT NULL CHECK (method IN ('payer_code', 'card', 'dynamic_qr')),
    status              TEXT NOT NULL CHECK (status IN ('processing', 'userpaying', 'awaiting_scan', 'succeeded', 'failed', 'closed', 'reversed')),
    amount_fen          BIGINT NOT NULL CHECK (amount_fen > 0),
    refund_reserved_fen BIGINT NOT NULL DEFAULT 0,
    refunded_fen        BIGINT NOT NULL DEFAULT 0,
    description         TEXT NOT NULL,
    trade_no            TEXT,
    fail_code           TEXT,
    qr_payload          TEXT,
    expires_at_ms       BIGINT,
    paid_at_ms          BIGINT,
    version             BIGINT NOT NULL,
    created_at_ms       BIGINT NOT NULL,
    updated_at_ms       BIGINT NOT NULL,
    next_check_at_ms    BIGINT,
    check_attempts      BIGINT NOT NULL DEFAULT 0,
    lease_owner         TEXT,
    lease_until_ms      BIGINT,
    CONSTRAINT payments_out_trade_no_key UNIQUE (out_trade_no),
    CHECK (refunded_fen >= 0 AND refunded_fen <= refund_reserved_fen AND refund_reserved_fen <= amount_fen)
);
CREATE INDEX payments_due_idx ON payments (next_check_at_ms) WHERE next_check_at_ms IS NOT NULL;
CREATE INDEX payments_facility_created_idx ON payments (facility_id, created_at_ms);

CREATE TABLE refunds (
    id               TEXT PRIMARY KEY,
    payment_id       TEXT NOT NULL REFERENCES payments (id),
    terminal_id      TEXT NOT NULL REFERENCES terminals (id),
    request_id       TEXT NOT NULL,
    out_refund_no    TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('processing', 'succeeded', 'failed')),
    amount_fen       BIGINT NOT NULL CHECK (amount_fen > 0),
    reason           TEXT NOT NULL,
    refund_no        TEXT,
    fail_code        TEXT,
    succeeded_at_ms  BIGINT,
    version          BIGINT NOT NULL,
    created_at_ms    BIGINT NOT NULL,
    updated_at_ms    BIGINT NOT NULL,
    next_check_at_ms BIGINT,
    check_attempts   BIGINT NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_until_ms   BIGINT,
    CONSTRAINT refunds_out_refund_no_key UNIQUE (out_refund_no)
);
CREATE INDEX refunds_payment_idx ON refunds (payment_id);
CREATE INDEX refunds_due_idx ON refunds (next_check_at_ms) WHERE next_check_at_ms IS NOT NULL;

-- Operator notifications already applied, by event id: the same event may arrive many times.
CREATE TABLE operator_events (
    id             TEXT PRIMARY KEY,
    event_type     TEXT NOT NULL,
    received_at_ms BIGINT NOT NULL
);
