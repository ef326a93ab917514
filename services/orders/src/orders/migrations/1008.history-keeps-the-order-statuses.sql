-- Each applied change keeps the name of the status it left and the order's statuses as its published
-- OrderStatusChanged carried them (after the command's changes; NULL for a type the order had none of), under the
-- names of contracts.past_changes. The campaigns backtest (GET /v1/status-changes) reads them from the row, where it
-- probed the order's earlier rows for each change: half of that query's CPU.
ALTER TABLE status_history
    ADD COLUMN from_name text,
    ADD COLUMN general_code text, ADD COLUMN general_name text,
    ADD COLUMN delivery_code text, ADD COLUMN delivery_name text,
    ADD COLUMN payment_code text, ADD COLUMN payment_name text;
-- Existing applied rows: as that probe found them, the order's applied rows up to this one (by id, the order in
-- which they were applied), the latest of each type; the status left is the latest earlier row of the same type.
UPDATE status_history h
SET (from_name, general_code, general_name, delivery_code, delivery_name, payment_code, payment_name) = (
    SELECT (array_agg(b.to_name) FILTER (WHERE b.type = h.type AND b.id < h.id))[1],
           (array_agg(b.to_code) FILTER (WHERE b.type = 'general'))[1],
           (array_agg(b.to_name) FILTER (WHERE b.type = 'general'))[1],
           (array_agg(b.to_code) FILTER (WHERE b.type = 'delivery'))[1],
           (array_agg(b.to_name) FILTER (WHERE b.type = 'delivery'))[1],
           (array_agg(b.to_code) FILTER (WHERE b.type = 'payment'))[1],
           (array_agg(b.to_name) FILTER (WHERE b.type = 'payment'))[1]
    FROM (SELECT b.id, b.type, b.to_code, b.to_name FROM status_history b
          WHERE b.partner_id = h.partner_id AND b.order_id = h.order_id AND b.id <= h.id AND b.outcome = 'applied'
          ORDER BY b.id DESC) b)
WHERE h.outcome = 'applied';
