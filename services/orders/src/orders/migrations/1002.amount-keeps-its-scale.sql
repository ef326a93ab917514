-- numeric(30,6) wrote every amount with six decimals ("1490.000000"); plain numeric keeps what upstream sent.
ALTER TABLE orders ALTER COLUMN amount TYPE numeric;
ALTER TABLE orders ADD CONSTRAINT orders_amount_not_negative CHECK (amount >= 0);
