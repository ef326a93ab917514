-- A SendSms replayed from notifier.send-sms.v1.dlq (`make ops ARGS="dlq replay ..."`, header `replay-of`) may
-- start a new round of attempts for its message (docs/notifier.md, "Replaying a dead letter").
-- replay_round: 0 for the first round, n after the n-th accepted replay; it is part of the provider's
-- idempotency key and of the outcome events' ids, so a new round is new to the provider and to consumers.
-- attempts_before_round: attempts made before the round began; each round gets MAX_ATTEMPTS of its own.
ALTER TABLE messages ADD COLUMN replay_round integer NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN attempts_before_round integer NOT NULL DEFAULT 0;

-- Replays that reached an existing message, one row per dead letter (`replay-of` names it): once accepted, a
-- redelivered replay finds the row and does nothing; a refused one says why, and may be accepted later.
CREATE TABLE replays (
    message_id  uuid        NOT NULL REFERENCES messages ON DELETE CASCADE,
    replay_of   text        NOT NULL,
    outcome     text        NOT NULL CHECK (outcome IN ('accepted', 'refused')),
    reason      text,
    detail      text,
    replayed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, replay_of)
);
