-- A partner's status definitions. (partner_id, code) is the identity; code and type never change.
CREATE TABLE status_definitions (
    partner_id            text        NOT NULL,
    code                  text        NOT NULL CHECK (code ~ '^[a-z0-9_-]{1,64}$'),
    type                  text        NOT NULL CHECK (type IN ('general', 'delivery', 'payment')),
    type_rank             smallint    GENERATED ALWAYS AS (
                              CASE type WHEN 'general' THEN 1 WHEN 'delivery' THEN 2 ELSE 3 END) STORED,
    name                  text        NOT NULL,
    localized_names       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    description           text,
    include_in_analytics  boolean     NOT NULL DEFAULT false,
    position              integer     NOT NULL DEFAULT 0,
    is_initial            boolean     NOT NULL DEFAULT false,
    allowed_next          text[],     -- NULL: any transition; '{}': final status
    archived              boolean     NOT NULL DEFAULT false,
    version               integer     NOT NULL DEFAULT 1,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partner_id, code)
);

-- The listing order (type, then position) doubles as the keyset-pagination order.
CREATE INDEX status_definitions_listing ON status_definitions (partner_id, type_rank, position, code);

-- At most one initial status per type and partner, among the live ones.
CREATE UNIQUE INDEX status_definitions_one_initial
    ON status_definitions (partner_id, type) WHERE is_initial AND NOT archived;
