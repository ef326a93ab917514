-- The console's users: partner users (marketer, viewer) bound to one partner, and the platform's operators (ops),
-- bound to none. Passwords are argon2 hashes (pwdlib); a one-time password must be changed at first sign-in.
CREATE TABLE console_users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partner_id text,
    email text NOT NULL,
    display_name text NOT NULL,
    role text NOT NULL CHECK (role IN ('marketer', 'viewer', 'ops')),
    password_hash text NOT NULL,
    must_change_password boolean NOT NULL DEFAULT true,
    language text NOT NULL DEFAULT 'en',
    time_zone text NOT NULL DEFAULT 'Europe/Moscow',
    created_at timestamptz NOT NULL DEFAULT now(),
    last_sign_in_at timestamptz,
    CHECK ((role = 'ops') = (partner_id IS NULL))
);

CREATE UNIQUE INDEX console_users_email ON console_users (lower(email));
