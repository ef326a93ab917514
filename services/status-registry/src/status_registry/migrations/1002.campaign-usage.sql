-- Which codes each campaign names and whether it is active (a replica of campaigns.status-usage.v1):
-- a status named by an active campaign cannot be archived.
CREATE TABLE campaign_usage (
    partner_id  text    NOT NULL,
    campaign_id text    NOT NULL,
    name        text    NOT NULL,
    active      boolean NOT NULL,
    codes       text[]  NOT NULL,
    version     integer NOT NULL,
    PRIMARY KEY (partner_id, campaign_id)
);
CREATE INDEX campaign_usage_active_codes ON campaign_usage USING gin (codes) WHERE active;
