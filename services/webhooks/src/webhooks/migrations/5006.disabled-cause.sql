-- Why an endpoint is disabled, as a stable code (the console and integrators read it instead of the words of
-- disabled_reason): gone_410, failing_5_days (DISABLE_AFTER_FAILING_S of failures), by_partner; null while enabled.
ALTER TABLE endpoints ADD COLUMN disabled_cause text
    CHECK (disabled_cause IN ('gone_410', 'failing_5_days', 'by_partner'));
UPDATE endpoints SET disabled_cause = CASE
        WHEN disabled_reason LIKE '%410 Gone%' THEN 'gone_410'
        WHEN disabled_reason LIKE 'every delivery failed since%' THEN 'failing_5_days'
        ELSE 'by_partner' END
 WHERE NOT enabled;
