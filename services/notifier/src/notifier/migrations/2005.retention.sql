-- Retention (servicekit.retention) deletes finished attempts and receipts by age; attempts in flight (no
-- finished_at) are not in the index.
CREATE INDEX attempts_finished_by_age ON attempts (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX receipts_by_age ON receipts (updated_at);
