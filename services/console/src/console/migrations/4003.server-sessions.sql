-- Sessions live here, not in the browser: the cookie holds only a random id, and this table the sessions signed in
-- (by the SHA-256 of that id, so a copy of the table signs nobody in). Signing out deletes the row, so a copied
-- cookie stops working at once; every console instance sees the same rows. The session generation of 4002 is no
-- longer needed: ending a user's sessions deletes their rows (old cookies name no row: everyone signs in again).
CREATE TABLE console_sessions (
    id_hash bytea PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES console_users (id) ON DELETE CASCADE,
    data jsonb NOT NULL DEFAULT '{}',  -- what a page keeps for the next one: flash messages, a refusal to show
    created_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    address text NOT NULL DEFAULT '',
    user_agent text NOT NULL DEFAULT ''
);

CREATE INDEX console_sessions_user ON console_sessions (user_id);
CREATE INDEX console_sessions_last_seen ON console_sessions (last_seen_at);

ALTER TABLE console_users DROP COLUMN session_generation;

-- Every sign-in and every refused one (time, the email as typed, the client's address, the outcome): the record an
-- operator reads, and what throttles password guessing, per account and per address, across all instances.
CREATE TABLE console_sign_ins (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    email text NOT NULL,
    address text NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('signed_in', 'failed', 'throttled'))
);

CREATE INDEX console_sign_ins_email ON console_sign_ins (lower(email), at);
CREATE INDEX console_sign_ins_address ON console_sign_ins (address, at);
CREATE INDEX console_sign_ins_at ON console_sign_ins (at);
