-- Retention of finished journey runs (servicekit.retention): they back "once per order" re-entry as long as fired
-- evaluations do, then go; the waiting and held ones never.
CREATE INDEX journey_runs_finished_by_age ON journey_runs (updated_at) WHERE state IN ('done', 'left');
