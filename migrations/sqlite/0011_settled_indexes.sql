-- What reconciliation reads (kept side by side with the other backend's migrations): a
-- wallet's payments and refunds that settled within a day's window. Without these, every run
-- of one wallet and day reads every payment and refund ever taken. Partial: rows that have not
-- settled are never asked for, so taking a payment does not touch them until it succeeds.
CREATE INDEX payments_wallet_paid_idx ON payments (merchant_wallet_id, paid_at_ms) WHERE paid_at_ms IS NOT NULL;
CREATE INDEX refunds_succeeded_idx ON refunds (succeeded_at_ms) WHERE status = 'succeeded';
