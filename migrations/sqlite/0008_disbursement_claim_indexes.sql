-- Claiming due subsidy lines must cost the same at the first line of a batch as at the last:
-- partial indexes hold only the lines a worker can still claim, so finished lines are never
-- scanned again.
CREATE INDEX subsidy_lines_pending_idx ON subsidy_lines (batch_id, seq) WHERE status = 'pending';
CREATE INDEX subsidy_lines_sending_due_idx ON subsidy_lines (next_attempt_at_ms) WHERE status = 'sending';
