-- The campaigns backtest reads a partner's applied changes of one status type in a period, in the order they were
-- recorded (GET /v1/status-changes): one range of this index, already in that order (no sort), the target code
-- read from the index tuple.
CREATE INDEX status_history_changes ON status_history (partner_id, type, recorded_at, id) INCLUDE (to_code)
    WHERE outcome = 'applied';
