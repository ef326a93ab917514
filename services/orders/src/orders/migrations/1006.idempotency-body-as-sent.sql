-- A repeated Idempotency-Key answers the first response byte for byte: json keeps the text as stored, where jsonb
-- reordered the keys (the first answer and its repeats differed in key order).
ALTER TABLE idempotency_keys ALTER COLUMN body TYPE json USING body::json;
