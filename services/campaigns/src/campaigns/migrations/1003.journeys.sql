-- Journeys (docs/campaigns.md "Journeys", docs/architecture.md "Journeys and durable timers").

-- Every saved definition of a campaign, kept: an order goes on with the definition it entered with. `version` is
-- the campaign's version when the definition was saved; a run's definition is the latest saved at or before the
-- campaign version it entered at (state changes bump the version without saving a definition).
CREATE TABLE campaign_versions (
    campaign_id text        NOT NULL,
    version     integer     NOT NULL,
    definition  jsonb       NOT NULL,
    saved_at    timestamptz NOT NULL,
    PRIMARY KEY (campaign_id, version)
);
INSERT INTO campaign_versions (campaign_id, version, definition, saved_at)
    SELECT id, version, definition, updated_at FROM campaigns;

-- An evaluation of a journey's trigger that let the order in.
ALTER TABLE evaluations DROP CONSTRAINT evaluations_outcome_check;
ALTER TABLE evaluations ADD CONSTRAINT evaluations_outcome_check
    CHECK (outcome IN ('fired', 'filtered_out', 'capped', 'outside_reentry', 'failed', 'entered'));

-- One order's way through one journey ("run"; re-entry every_time makes run 2, 3...): the durable timer.
CREATE TABLE journey_runs (
    campaign_id  text        NOT NULL,
    order_id     text        NOT NULL,
    run          integer     NOT NULL,
    partner_id   text        NOT NULL,
    customer_id  text        NOT NULL,
    version      integer     NOT NULL,  -- the campaign's version at entry (see campaign_versions)
    step         integer     NOT NULL,  -- the wait step it waits at (-1: entered, not started), left at, or done
    state        text        NOT NULL CHECK (state IN ('waiting', 'held', 'done', 'left')),
    due_at       timestamptz,           -- waiting/held: when the wait ends
    sequence     integer     NOT NULL,  -- of the latest status change seen: an older, redelivered one is ignored
    change       jsonb       NOT NULL,  -- that OrderStatusChanged: the order and customer as they are now
    left_reason  text,
    entered_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (campaign_id, order_id, run)
);
-- The timers' claim walks only waiting rows, earliest first: a million runs waiting for later cost it nothing.
CREATE INDEX journey_runs_due ON journey_runs (due_at) WHERE state = 'waiting';
-- A status change finds its order's open runs; a pause, resume or archive its campaign's.
CREATE INDEX journey_runs_open_per_order ON journey_runs (partner_id, order_id) WHERE state IN ('waiting', 'held');
CREATE INDEX journey_runs_open_per_campaign ON journey_runs (campaign_id) WHERE state IN ('waiting', 'held');
