-- Partners' webhook endpoints, their signing secrets, the messages due to them and every attempt made.

CREATE TABLE endpoints (
    id               text PRIMARY KEY,
    partner_id       text NOT NULL,
    url              text NOT NULL,
    event_types      text[] NOT NULL,
    status_type      text,
    description      text,
    enabled          boolean NOT NULL DEFAULT true,
    disabled_reason  text,
    disabled_at      timestamptz,
    -- The first failed attempt since the last success: five days of it disable the endpoint.
    failing_since    timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    version          integer NOT NULL DEFAULT 1
);
CREATE INDEX endpoints_by_partner ON endpoints (partner_id, created_at, id);

-- Every secret signs until it expires: the current one (expires_at null) and, for a grace period after a rotation,
-- the one it replaced (both signatures are sent).
CREATE TABLE endpoint_secrets (
    id           bigserial PRIMARY KEY,
    endpoint_id  text NOT NULL REFERENCES endpoints ON DELETE CASCADE,
    secret       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz
);
CREATE INDEX endpoint_secrets_of_endpoint ON endpoint_secrets (endpoint_id, id DESC);

-- One message per (endpoint, platform event): its id is the webhook-id of every attempt.
CREATE TABLE messages (
    id               text PRIMARY KEY,
    partner_id       text NOT NULL,
    endpoint_id      text NOT NULL REFERENCES endpoints ON DELETE CASCADE,
    event_id         text NOT NULL,
    event_type       text NOT NULL,
    -- Status changes keep their order's order: the order and its status sequence number.
    order_id         text,
    sequence         bigint,
    payload          text NOT NULL,  -- the body exactly as signed and sent, the same on every attempt
    state            text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'succeeded', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    -- A claimed message belongs to the instance holding its lease until lease_until; after that (it died or hung
    -- mid-delivery) any instance may claim it again.
    lease_token      uuid,
    lease_until      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    UNIQUE (endpoint_id, event_id)
);
-- What the dispatcher claims: the due pending messages of an endpoint, oldest due first.
CREATE INDEX messages_due ON messages (endpoint_id, next_attempt_at) WHERE state = 'pending';
-- What holds a status change back: an earlier pending one of the same order to the same endpoint.
CREATE INDEX messages_pending_by_order ON messages (endpoint_id, order_id, sequence)
    WHERE state = 'pending' AND order_id IS NOT NULL;
-- The delivery log, newest first.
CREATE INDEX messages_log ON messages (endpoint_id, created_at DESC, id DESC);

CREATE TABLE attempts (
    id                bigserial PRIMARY KEY,
    message_id        text NOT NULL REFERENCES messages ON DELETE CASCADE,
    attempted_at      timestamptz NOT NULL,
    response_status   integer,
    latency_ms        integer NOT NULL,
    response_excerpt  text,
    error             text
);
CREATE INDEX attempts_of_message ON attempts (message_id, id);
