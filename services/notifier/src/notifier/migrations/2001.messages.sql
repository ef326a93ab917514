-- One row per SendSms command: (partner_id, send_sms_id) is the idempotency key, so a redelivered
-- command finds its row and sends nothing.
CREATE TABLE messages (
    message_id          uuid        PRIMARY KEY,
    seq                 bigserial   NOT NULL UNIQUE,  -- listing and cursor order
    partner_id          text        NOT NULL,
    send_sms_id         text        NOT NULL,
    campaign_id         text        NOT NULL,
    order_id            text        NOT NULL,
    customer_id         text        NOT NULL,
    phone               text        NOT NULL,
    text                text        NOT NULL,
    sender              text,
    transactional       boolean     NOT NULL DEFAULT false,
    encoding            text        NOT NULL CHECK (encoding IN ('gsm7', 'ucs2')),
    segments            integer     NOT NULL CHECK (segments >= 1),
    status              text        NOT NULL CHECK (status IN
                            ('scheduled', 'pending', 'sending', 'dispatched', 'delivered', 'failed', 'expired')),
    failure_reason      text,
    failure_detail      text,
    provider            text,
    provider_message_id text,
    attempts            integer     NOT NULL DEFAULT 0,
    requested_at        timestamptz NOT NULL,
    expires_at          timestamptz NOT NULL,
    not_before          timestamptz,
    due_at              timestamptz,  -- scheduled/pending: when the dispatcher takes it
    lease_until         timestamptz,  -- sending: after this the attempt is orphaned and reconciled
    correlation_id      text,
    command             bytea       NOT NULL,  -- the record as received, for the dead-letter topic
    command_topic       text,
    command_partition   integer,
    command_offset      bigint,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (partner_id, send_sms_id)
);

CREATE INDEX messages_due ON messages (due_at) WHERE status IN ('scheduled', 'pending');
CREATE INDEX messages_in_flight ON messages (lease_until) WHERE status = 'sending';
CREATE INDEX messages_by_partner ON messages (partner_id, seq);
CREATE INDEX messages_by_order ON messages (partner_id, order_id, seq);
CREATE INDEX messages_by_phone ON messages (partner_id, phone, seq);
CREATE INDEX messages_by_campaign ON messages (partner_id, campaign_id, seq);

-- Every provider call, recorded (status 'in_flight') and committed BEFORE the provider is called.
CREATE TABLE attempts (
    message_id           uuid        NOT NULL REFERENCES messages ON DELETE CASCADE,
    attempt              integer     NOT NULL,
    provider             text        NOT NULL,
    status               text        NOT NULL CHECK (status IN
                             ('in_flight', 'accepted', 'failed', 'reconciled', 'unknown')),
    detail               text,
    provider_message_ids text[],
    started_at           timestamptz NOT NULL DEFAULT now(),
    finished_at          timestamptz,
    PRIMARY KEY (message_id, attempt)
);

-- Which message a provider id belongs to; SMPP gives one id per segment, gateways one per message.
CREATE TABLE message_parts (
    provider            text    NOT NULL,
    provider_message_id text    NOT NULL,
    message_id          uuid    NOT NULL REFERENCES messages ON DELETE CASCADE,
    segment             integer,  -- null: the id stands for the whole message
    PRIMARY KEY (provider, provider_message_id)
);
CREATE INDEX message_parts_by_message ON message_parts (message_id);

-- Delivery receipts per provider id and segment (-1: the whole message). Kept even when they arrive
-- before the dispatch is recorded; merged into the message status once the part is known.
CREATE TABLE receipts (
    provider            text        NOT NULL,
    provider_message_id text        NOT NULL,
    segment             integer     NOT NULL,
    status              text        NOT NULL CHECK (status IN ('accepted', 'delivered', 'undeliverable')),
    raw_status          text        NOT NULL,
    occurred_at         timestamptz,
    received_at         timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, provider_message_id, segment)
);

-- The consent ledger: a partner's customers who asked not to receive marketing SMS.
CREATE TABLE opt_outs (
    partner_id  text        NOT NULL,
    phone       text        NOT NULL,
    source      text        NOT NULL CHECK (source IN ('api', 'inbound')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partner_id, phone)
);
