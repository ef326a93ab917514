-- The outbox is sharded into slots by key hash (servicekit.outbox): each slot is relayed by whichever relay holds
-- its lock, several at once, and each reads its slot oldest first through this index. Rows written before this
-- migration stay in slot 0 (docs/architecture.md, "Several instances": upgrade with the old instances stopped).
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS slot smallint NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS outbox_by_slot ON outbox (slot, id);
