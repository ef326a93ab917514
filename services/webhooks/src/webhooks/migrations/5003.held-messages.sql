-- A status change behind a pending earlier one of its order has no next_attempt_at (held) until that one is done:
-- the claims, which read due messages in next_attempt_at order, never scan what a failing change holds back.
ALTER TABLE messages ALTER COLUMN next_attempt_at DROP NOT NULL;
