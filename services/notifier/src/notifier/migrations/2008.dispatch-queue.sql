-- The dispatcher's queue in a table of its own, so that a message's status changes are HOT updates (issue 34).
--
-- `messages` had two partial indexes for the dispatcher (due messages by due_at, messages in flight by
-- lease_until), both over `status`. Every status change of a message (sending, dispatched, delivered) therefore
-- changed an indexed column: PostgreSQL wrote a new entry into all nine of its indexes, each time. At 1,000 events/s
-- these updates were most of the notifier's statement time and WAL. The queue holds only the messages the
-- dispatcher still has to look at (waiting or in flight), one small row each, kept by a trigger from the
-- messages' own writes: the statements that change a message stay as they were, and they cannot forget it.
CREATE TABLE dispatch_queue (
    message_id  uuid        PRIMARY KEY REFERENCES messages ON DELETE CASCADE,
    sending     boolean     NOT NULL,  -- false: waits (scheduled, pending); true: its attempt is in flight
    wake_at     timestamptz            -- waiting: when it is due; sending: when its lease runs out
);
CREATE INDEX dispatch_queue_due ON dispatch_queue (wake_at) WHERE NOT sending;
CREATE INDEX dispatch_queue_in_flight ON dispatch_queue (wake_at) WHERE sending;

CREATE FUNCTION keep_dispatch_queue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN ('scheduled', 'pending', 'sending') THEN
        INSERT INTO dispatch_queue (message_id, sending, wake_at)
        VALUES (NEW.message_id, NEW.status = 'sending',
                CASE WHEN NEW.status = 'sending' THEN NEW.lease_until ELSE NEW.due_at END)
        ON CONFLICT (message_id) DO UPDATE SET sending = EXCLUDED.sending, wake_at = EXCLUDED.wake_at
        WHERE (dispatch_queue.sending, dispatch_queue.wake_at) IS DISTINCT FROM (EXCLUDED.sending, EXCLUDED.wake_at);
    ELSIF TG_OP = 'UPDATE' AND OLD.status IN ('scheduled', 'pending', 'sending') THEN
        DELETE FROM dispatch_queue WHERE message_id = NEW.message_id;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER messages_dispatch_queue AFTER INSERT OR UPDATE OF status, due_at, lease_until ON messages
    FOR EACH ROW EXECUTE FUNCTION keep_dispatch_queue();

INSERT INTO dispatch_queue (message_id, sending, wake_at)
SELECT message_id, status = 'sending', CASE WHEN status = 'sending' THEN lease_until ELSE due_at END
FROM messages WHERE status IN ('scheduled', 'pending', 'sending');

DROP INDEX messages_due;
DROP INDEX messages_in_flight;

-- Room on each page for the new versions of its rows: a HOT update must find it on the row's own page. A message
-- is updated three times in its first seconds (sending, dispatched, delivered); its row is about a kilobyte.
ALTER TABLE messages SET (fillfactor = 70);
