-- The retention clean-up (servicekit.retention) deletes stored responses by age: idempotency_key_retention_hours.
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
