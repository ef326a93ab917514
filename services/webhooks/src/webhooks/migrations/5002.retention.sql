-- The retention clean-up deletes finished messages (and their attempts) by age.
CREATE INDEX messages_finished ON messages (finished_at) WHERE finished_at IS NOT NULL;
