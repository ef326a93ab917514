-- A current status keeps when it happened upstream (entered_at) apart from when this service applied it
-- (recorded_at, formerly `since`) and from the staleness watermark (occurred_at, source_sequence), which an
-- event repeating the status moves on.
ALTER TABLE order_statuses RENAME COLUMN since TO recorded_at;
ALTER TABLE order_statuses ADD COLUMN entered_at timestamptz;
-- Existing rows: the upstream time of the newest applied history row that set the status (one probe of
-- status_history_by_order per row), else the watermark's time, which is it unless a repeat moved it.
UPDATE order_statuses s SET entered_at = coalesce(
    (SELECT h.occurred_at FROM status_history h
     WHERE h.partner_id = s.partner_id AND h.order_id = s.order_id AND h.type = s.type AND h.to_code = s.code
       AND h.outcome = 'applied'
     ORDER BY h.id DESC LIMIT 1),
    s.occurred_at);
ALTER TABLE order_statuses ALTER COLUMN entered_at SET NOT NULL;
