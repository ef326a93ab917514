-- Orders, their current status per type, and every requested change (applied, unchanged or stale).
CREATE TABLE orders (
    partner_id     text          NOT NULL,
    order_id       text          NOT NULL,
    customer_id    text          NOT NULL,
    customer_phone text,
    customer_name  text,
    sms_consent    boolean       NOT NULL DEFAULT false,
    amount         numeric(30,6) NOT NULL,
    currency       char(3)       NOT NULL,
    placed_at      timestamptz   NOT NULL,
    last_sequence  integer       NOT NULL DEFAULT 0,  -- gap-free count of emitted status changes
    created_at     timestamptz   NOT NULL DEFAULT now(),
    updated_at     timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (partner_id, order_id)
);
CREATE INDEX orders_by_customer ON orders (partner_id, customer_id);
CREATE INDEX orders_by_updated ON orders (partner_id, updated_at, order_id);

CREATE TABLE order_statuses (
    partner_id      text        NOT NULL,
    order_id        text        NOT NULL,
    type            text        NOT NULL CHECK (type IN ('general', 'delivery', 'payment')),
    code            text        NOT NULL,
    name            text        NOT NULL,
    occurred_at     timestamptz NOT NULL,  -- of the event that set it: the staleness watermark
    source_sequence bigint,
    since           timestamptz NOT NULL,  -- when it was applied here
    PRIMARY KEY (partner_id, order_id, type),
    FOREIGN KEY (partner_id, order_id) REFERENCES orders ON DELETE CASCADE
);
CREATE INDEX order_statuses_by_code ON order_statuses (partner_id, type, code);

CREATE TABLE status_history (
    id              bigserial   PRIMARY KEY,
    partner_id      text        NOT NULL,
    order_id        text        NOT NULL,
    type            text        NOT NULL,
    outcome         text        NOT NULL CHECK (outcome IN ('applied', 'unchanged', 'stale')),
    from_code       text,
    to_code         text        NOT NULL,
    to_name         text        NOT NULL,
    sequence        integer,               -- the OrderStatusChanged sequence, for applied changes
    source_sequence bigint,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    event_id        text        NOT NULL,
    comment         text
);
CREATE INDEX status_history_by_order ON status_history (partner_id, order_id, id);
CREATE INDEX status_history_entries ON status_history (partner_id, to_code, occurred_at) WHERE outcome = 'applied';

-- REST idempotency: a repeated Idempotency-Key returns the first response.
CREATE TABLE idempotency_keys (
    partner_id   text        NOT NULL,
    key          text        NOT NULL,
    request_hash text        NOT NULL,
    status_code  integer     NOT NULL,
    body         jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partner_id, key)
);
