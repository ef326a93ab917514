-- The dispatcher instance that is sending: while that instance lives it holds a session advisory lock on
-- (7301, sent_by); once it died the lock is free and its attempts are reconciled at once, not after the lease.
ALTER TABLE messages ADD COLUMN sent_by integer;
