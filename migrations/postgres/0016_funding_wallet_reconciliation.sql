-- Reconciliation of a programme's funding wallet (kept side by side with migrations/sqlite).
--
-- A statement's wallet is a facility's merchant wallet or a programme's funding wallet; a
-- run names whichever owns it. Exactly one of the two is set.
ALTER TABLE reconciliation_runs ALTER COLUMN facility_id DROP NOT NULL;
ALTER TABLE reconciliation_runs ADD COLUMN programme_id TEXT REFERENCES subsidy_programmes (id);
ALTER TABLE reconciliation_runs ADD CONSTRAINT reconciliation_runs_owner_check
    CHECK ((facility_id IS NULL) <> (programme_id IS NULL));

-- A transfer that bounced back (the statement's TRANSFER_RETURN: a closed or frozen wallet)
-- re-opens its line: `returned`, with the operator's reason and reference and when it came
-- back, its amount released from the programme's budget so the office can re-issue it.
ALTER TABLE subsidy_lines DROP CONSTRAINT subsidy_lines_status_check;
ALTER TABLE subsidy_lines ADD CONSTRAINT subsidy_lines_status_check
    CHECK (status IN ('pending', 'sending', 'succeeded', 'failed', 'returned'));
ALTER TABLE subsidy_lines ADD COLUMN returned_at_ms BIGINT;
ALTER TABLE subsidy_lines ADD COLUMN return_reason TEXT;
ALTER TABLE subsidy_lines ADD COLUMN return_operator_ref TEXT;
ALTER TABLE subsidy_lines ADD CONSTRAINT subsidy_lines_return_check
    CHECK ((status = 'returned') = (returned_at_ms IS NOT NULL));

-- What a funding wallet's day reads: its transfers by when they settled and its returns by
-- when they came back. Partial: lines still being paid are never asked for.
CREATE INDEX subsidy_lines_settled_idx ON subsidy_lines (succeeded_at_ms)
    WHERE status IN ('succeeded', 'returned');
CREATE INDEX subsidy_lines_returned_idx ON subsidy_lines (returned_at_ms) WHERE status = 'returned';
CREATE INDEX subsidy_programmes_funding_wallet_idx ON subsidy_programmes (funding_wallet_id);
