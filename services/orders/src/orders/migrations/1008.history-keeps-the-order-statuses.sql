-- Each applied change keeps the name of the status it left and the order's statuses as its published
-- OrderStatusChanged carried them (after the command's changes; NULL for a type the order had none of), under the
-- names of contracts.past_changes. The campaigns backtest (GET /v1/status-changes) reads them from the row, where it
-- probed the order's earlier rows for each change: half of that query's CPU.
-- Added empty (no rewrite of the history at deploy): rows written before, or by an instance of the previous release
-- while this one rolls out, have none, and the query probes their order's earlier rows as it did before.
ALTER TABLE status_history
    ADD COLUMN from_name text,
    ADD COLUMN general_code text, ADD COLUMN general_name text,
    ADD COLUMN delivery_code text, ADD COLUMN delivery_name text,
    ADD COLUMN payment_code text, ADD COLUMN payment_name text;
