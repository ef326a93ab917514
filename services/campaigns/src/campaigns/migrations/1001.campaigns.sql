-- A partner's campaigns. The definition (trigger, filters, template, policies) is one validated JSON
-- document: it is read and written whole, never queried by its parts.
CREATE TABLE campaigns (
    partner_id  text        NOT NULL,
    id          text        NOT NULL,
    seq         bigserial   NOT NULL,  -- creation order, for listing (ids are random, timestamps can tie)
    name        text        NOT NULL,
    state       text        NOT NULL CHECK (state IN ('draft', 'active', 'paused', 'archived')),
    definition  jsonb       NOT NULL,
    version     integer     NOT NULL DEFAULT 1,
    activated_at timestamptz,  -- the last activation: the campaign reacts to changes published since
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partner_id, id)
);
CREATE UNIQUE INDEX campaigns_id ON campaigns (id);
CREATE INDEX campaigns_listing ON campaigns (partner_id, seq);
CREATE INDEX campaigns_active ON campaigns (state) WHERE state = 'active';

-- Per-partner defaults: quiet hours and the frequency cap.
CREATE TABLE partner_settings (
    partner_id  text        PRIMARY KEY,
    settings    jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per (campaign, triggering event): the decision and why. The primary key makes a replayed or
-- redelivered event a no-op: its evaluation exists, so nothing is decided or sent again.
CREATE TABLE evaluations (
    campaign_id    text        NOT NULL,
    event_id       text        NOT NULL,
    partner_id     text        NOT NULL,
    order_id       text        NOT NULL,
    customer_id    text        NOT NULL,
    outcome        text        NOT NULL
                   CHECK (outcome IN ('fired', 'filtered_out', 'capped', 'outside_reentry', 'failed')),
    reasons        jsonb       NOT NULL DEFAULT '[]'::jsonb,
    send_sms_id    text,
    transactional  boolean     NOT NULL DEFAULT false,
    evaluated_at   timestamptz NOT NULL,
    PRIMARY KEY (campaign_id, event_id)
);
-- Re-entry: has this campaign already sent for this order?
CREATE INDEX evaluations_fired_per_order ON evaluations (campaign_id, order_id) WHERE outcome = 'fired';
-- Frequency cap: marketing SMS sent to a customer recently, across the partner's campaigns.
CREATE INDEX evaluations_marketing_per_customer ON evaluations (partner_id, customer_id, evaluated_at)
    WHERE outcome = 'fired' AND NOT transactional;

-- What the notifier reported about the SMS we requested; one row per (command, kind), so a
-- redelivered or re-emitted report counts once.
CREATE TABLE sms_outcomes (
    send_sms_id  text        NOT NULL,
    kind         text        NOT NULL CHECK (kind IN ('dispatched', 'delivered', 'failed')),
    partner_id   text        NOT NULL,
    campaign_id  text        NOT NULL,
    reason       text,
    occurred_at  timestamptz NOT NULL,
    PRIMARY KEY (send_sms_id, kind)
);
CREATE INDEX sms_outcomes_per_campaign ON sms_outcomes (partner_id, campaign_id);
