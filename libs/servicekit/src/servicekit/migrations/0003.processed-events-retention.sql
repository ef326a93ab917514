-- Retention (servicekit.retention) deletes claims older than processed_events_retention_days: by age, across
-- consumers, so it needs an index on the age alone (the primary key starts with the consumer).
CREATE INDEX IF NOT EXISTS processed_events_by_age ON processed_events (processed_at);
