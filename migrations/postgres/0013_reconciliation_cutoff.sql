-- Cut-off across midnight, whichever day is imported and run first.
--
-- A carepay record that the statement of a neighbouring business day lists (it settled across
-- midnight) is one timing difference. The run of the statement's day writes it here; the run of
-- the record's own day reads it, so the record is reported once, on its own day, as timing,
-- and never raised as open on either day once both statements are in. Rewritten by every new
-- run of the statement's day, so it says what that day's newest statement lists.
CREATE TABLE reconciliation_timing (
    wallet_id      TEXT NOT NULL,
    -- The record's business day in carepay.
    record_day     TEXT NOT NULL,
    -- out_trade_no / out_refund_no.
    out_no         TEXT NOT NULL,
    -- The day whose statement lists it.
    statement_day  TEXT NOT NULL,
    run_id         TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (wallet_id, record_day, out_no)
);
CREATE INDEX reconciliation_timing_statement_day_idx ON reconciliation_timing (wallet_id, statement_day);

-- One row per wallet that reconciliation has touched. A run, an import and a closing of a
-- wallet's day take this row first (an upsert, which waits for another transaction holding
-- it), so what one day's run writes for its neighbours and what they read are never missed by
-- two transactions at once, and a day cannot close while a new statement of it is kept.
CREATE TABLE reconciliation_wallets (
    wallet_id      TEXT PRIMARY KEY,
    touched_at_ms  BIGINT NOT NULL
);
