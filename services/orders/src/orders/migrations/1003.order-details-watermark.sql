-- The details' watermark: where upstream the upsert whose details (customer, amount, currency, placed_at) are
-- stored stands; an older upsert leaves them as they are (same rule as a status type's watermark). NULL for the
-- orders stored before it was kept: not known, so their next upsert applies, as it did before, and sets it.
ALTER TABLE orders ADD COLUMN details_occurred_at timestamptz, ADD COLUMN details_source_sequence bigint;

-- Every upsert's details: created, updated, unchanged, or ignored as stale; `fields` are those that differed
-- from the stored details (changed, or ignored when stale).
CREATE TABLE order_details_history (
    id              bigserial   PRIMARY KEY,
    partner_id      text        NOT NULL,
    order_id        text        NOT NULL,
    outcome         text        NOT NULL CHECK (outcome IN ('created', 'updated', 'unchanged', 'stale')),
    fields          text[]      NOT NULL,
    source_sequence bigint,
    occurred_at     timestamptz NOT NULL,  -- of the upsert, upstream
    recorded_at     timestamptz NOT NULL,  -- when it was processed here
    event_id        text        NOT NULL
);
CREATE INDEX order_details_history_by_order ON order_details_history (partner_id, order_id, id);
