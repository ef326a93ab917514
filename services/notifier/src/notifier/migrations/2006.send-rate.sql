-- The provider's rate limit, shared by every notifier instance (notifier.limiter): per provider account, the time
-- from which its next send may go. An instance reserves the sends of the next tenth of a second in one update.
CREATE TABLE send_rate (
    account  text        PRIMARY KEY,
    next_at  timestamptz NOT NULL
);
