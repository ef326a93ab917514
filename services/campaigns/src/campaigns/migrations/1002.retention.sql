-- Retention (servicekit.retention): old evaluations and SMS outcomes are deleted by age, evaluations that sent
-- nothing and fired ones after different times (fired ones back the frequency cap and "once per order"): one
-- partial index each, so neither clean-up walks past the rows the other keeps.
CREATE INDEX evaluations_unfired_by_age ON evaluations (evaluated_at) WHERE outcome <> 'fired';
CREATE INDEX evaluations_fired_by_age ON evaluations (evaluated_at) WHERE outcome = 'fired';
CREATE INDEX sms_outcomes_by_age ON sms_outcomes (occurred_at);

-- What the clean-up deleted, counted per campaign, so that the stats endpoint still counts it:
-- metric 'outcome' (key: the evaluation outcome), 'filtered_out_reason' (the reason code), 'sms' (the
-- outcome kind) and 'sms_failed_reason' (the failure reason).
CREATE TABLE campaign_stats_archive (
    partner_id  text   NOT NULL,
    campaign_id text   NOT NULL,
    metric      text   NOT NULL CHECK (metric IN ('outcome', 'filtered_out_reason', 'sms', 'sms_failed_reason')),
    key         text   NOT NULL,
    n           bigint NOT NULL,
    PRIMARY KEY (partner_id, campaign_id, metric, key)
);
