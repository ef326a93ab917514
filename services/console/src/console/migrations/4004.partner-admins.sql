-- A partner's admins (issue 30): the role `admin` manages the partner's users and API clients. A user may be
-- disabled (their sessions end at once and they cannot sign in) and enabled again; every change an admin makes
-- to a user is recorded (who, what, when) in console_user_changes.
ALTER TABLE console_users DROP CONSTRAINT console_users_role_check;
ALTER TABLE console_users ADD CONSTRAINT console_users_role_check
    CHECK (role IN ('admin', 'marketer', 'viewer', 'ops'));
ALTER TABLE console_users ADD COLUMN disabled_at timestamptz;

CREATE TABLE console_user_changes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partner_id text NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,  -- the admin's email as it was then
    user_email text NOT NULL,  -- the changed user's email
    action text NOT NULL CHECK (action IN ('invited', 'role_changed', 'disabled', 'enabled')),
    details jsonb NOT NULL DEFAULT '{}'
);

CREATE INDEX console_user_changes_partner ON console_user_changes (partner_id, id);
