-- API clients per partner, their secrets (argon2 hashes only), who did what to them, and the signing keys.

CREATE TABLE api_clients (
    client_id          text PRIMARY KEY,
    partner_id         text NOT NULL,
    name               text NOT NULL,
    scopes             text[] NOT NULL,
    expires_at         timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    created_by         text NOT NULL,
    revoked_at         timestamptz,
    revoked_by         text,
    last_used_at       timestamptz,
    secret_rotated_at  timestamptz,
    version            integer NOT NULL DEFAULT 1
);
-- A name names one live client of its partner (a revoked client's name may be used again).
CREATE UNIQUE INDEX api_clients_live_name ON api_clients (partner_id, lower(name)) WHERE revoked_at IS NULL;
CREATE INDEX api_clients_by_partner ON api_clients (partner_id, created_at, client_id);

-- At most two secrets of a client work at once: the current one (expires_at null) and, for a grace period
-- after a rotation, the one it replaced.
CREATE TABLE client_secrets (
    id           bigserial PRIMARY KEY,
    client_id    text NOT NULL REFERENCES api_clients ON DELETE CASCADE,
    secret_hash  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz
);
CREATE INDEX client_secrets_of_client ON client_secrets (client_id, id DESC);

CREATE TABLE client_audit (
    id          bigserial PRIMARY KEY,
    partner_id  text NOT NULL,
    client_id   text NOT NULL REFERENCES api_clients ON DELETE CASCADE,
    action      text NOT NULL CHECK (action IN ('created', 'secret_rotated', 'revoked')),
    actor       text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    details     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX client_audit_of_client ON client_audit (partner_id, client_id, id);

-- Published from created_at until published_until (null: while it signs); signs from signs_from until
-- signs_until (null: until a newer key takes over). The private key is a JWE (dir, A256GCM) under the
-- service's KEY_ENCRYPTION_SECRET: the database alone cannot sign.
CREATE TABLE signing_keys (
    kid                    text PRIMARY KEY,
    algorithm              text NOT NULL,
    public_jwk             jsonb NOT NULL,
    private_key_encrypted  text NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    signs_from             timestamptz NOT NULL,
    signs_until            timestamptz,
    published_until        timestamptz
);
