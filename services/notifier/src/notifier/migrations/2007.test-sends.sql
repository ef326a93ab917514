-- A marketer's test send (POST /v1/messages/test, the console's "Send a test"): sent like any SMS, shown marked as a
-- test, and its outcome events carry is_test so that no campaign counts it.
ALTER TABLE messages ADD COLUMN is_test boolean NOT NULL DEFAULT false;

-- Who sent which test, for the limit per console user (TEST_SENDS_PER_HOUR), shared by every notifier instance: a
-- test send counts its actor's rows of the last hour under a transaction advisory lock on (partner, actor).
CREATE TABLE test_sends (
    partner_id  text        NOT NULL,
    actor       text        NOT NULL,
    message_id  uuid        NOT NULL REFERENCES messages ON DELETE CASCADE,
    sent_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id)
);
CREATE INDEX test_sends_by_actor ON test_sends (partner_id, actor, sent_at);
