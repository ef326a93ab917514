-- The outbox is a queue: every row is inserted, then deleted by the relay within milliseconds. With the default
-- thresholds (20 % of the table) autovacuum waits for tens of thousands of dead rows, and every relay batch
-- walks past them in the index. Vacuum it after a fixed number of dead rows instead.
ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
