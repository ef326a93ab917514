"""The console's own SQL: its users, their sessions and the record of sign-ins. It holds no order, status or
campaign data."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from console.domain import Failures, Role, User, UserState, user_state
from servicekit.db import DbConnection

_COLUMNS = "id, partner_id, email, display_name, role, must_change_password, language, time_zone"
# The same columns, of the users table joined as `u`.
_USER_COLUMNS = ", ".join(f"u.{column.strip()}" for column in _COLUMNS.split(","))


def _user(row: asyncpg.Record) -> User:
    return User(
        id=row["id"],
        partner_id=row["partner_id"],
        email=row["email"],
        display_name=row["display_name"],
        role=Role(row["role"]),
        must_change_password=row["must_change_password"],
        language=row["language"],
        time_zone=row["time_zone"],
    )


class UserRepository:
    def __init__(self, conn: DbConnection) -> None:
        self.conn = conn

    async def by_id(self, user_id: int) -> User | None:
        row = await self.conn.fetchrow(f"SELECT {_COLUMNS} FROM console_users WHERE id = $1", user_id)
        return _user(row) if row else None

    async def credentials(self, email: str) -> tuple[User, str, bool] | None:
        """The user with this email (any case), their password hash, and whether they are disabled."""
        row = await self.conn.fetchrow(
            f"SELECT {_COLUMNS}, password_hash, disabled_at IS NOT NULL AS disabled FROM console_users"
            " WHERE lower(email) = lower($1)",
            email,
        )
        return (_user(row), row["password_hash"], row["disabled"]) if row else None

    async def upsert(
        self,
        partner_id: str | None,
        email: str,
        display_name: str,
        role: Role,
        password_hash: str,
        must_change_password: bool,
        language: str,
    ) -> User:
        """Create the user, or reset the one with this email (role, partner and password)."""
        row = await self.conn.fetchrow(
            f"INSERT INTO console_users (partner_id, email, display_name, role, password_hash, must_change_password,"
            f" language) VALUES ($1, $2, $3, $4, $5, $6, $7) "
            f"ON CONFLICT (lower(email)) DO UPDATE SET partner_id = EXCLUDED.partner_id,"
            f" display_name = EXCLUDED.display_name, role = EXCLUDED.role, password_hash = EXCLUDED.password_hash,"
            f" must_change_password = EXCLUDED.must_change_password, disabled_at = NULL RETURNING {_COLUMNS}",
            partner_id,
            email,
            display_name,
            str(role),
            password_hash,
            must_change_password,
            language,
        )
        assert row is not None
        return _user(row)

    async def set_password(self, user_id: int, password_hash: str) -> User:
        row = await self.conn.fetchrow(
            "UPDATE console_users SET password_hash = $2, must_change_password = false"
            f" WHERE id = $1 RETURNING {_COLUMNS}",
            user_id,
            password_hash,
        )
        assert row is not None
        return _user(row)

    async def rehash(self, user_id: int, password_hash: str) -> None:
        await self.conn.execute("UPDATE console_users SET password_hash = $2 WHERE id = $1", user_id, password_hash)

    async def signed_in(self, user_id: int) -> None:
        await self.conn.execute("UPDATE console_users SET last_sign_in_at = now() WHERE id = $1", user_id)

    async def set_preferences(self, user_id: int, language: str, time_zone: str) -> None:
        await self.conn.execute(
            "UPDATE console_users SET language = $2, time_zone = $3 WHERE id = $1", user_id, language, time_zone
        )


@dataclass(frozen=True)
class PartnerUserRow:
    """A user as the partner's admin sees them on the Users page."""

    user: User
    state: UserState
    disabled: bool
    last_sign_in_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class UserChange:
    at: datetime
    actor: str
    user_email: str
    action: str
    details: dict[str, Any]


class PartnerUserRepository:
    """One partner's users, as its admins manage them, and the record of their changes."""

    def __init__(self, conn: DbConnection, partner_id: str) -> None:
        self.conn = conn
        self.partner_id = partner_id

    async def lock(self) -> None:
        """Until the transaction ends, changes to this partner's users wait for each other: two admins demoting each
        other at once are judged one after the other, so the partner keeps an admin."""
        await self.conn.execute("SELECT pg_advisory_xact_lock(7202613, hashtext($1))", self.partner_id)

    async def all(self) -> list[PartnerUserRow]:
        rows = await self.conn.fetch(
            f"SELECT {_COLUMNS}, disabled_at IS NOT NULL AS disabled, last_sign_in_at, created_at FROM console_users"
            " WHERE partner_id = $1 ORDER BY lower(email)",
            self.partner_id,
        )
        return [_partner_user(row) for row in rows]

    async def get(self, user_id: int) -> PartnerUserRow | None:
        row = await self.conn.fetchrow(
            f"SELECT {_COLUMNS}, disabled_at IS NOT NULL AS disabled, last_sign_in_at, created_at FROM console_users"
            " WHERE partner_id = $1 AND id = $2",
            self.partner_id,
            user_id,
        )
        return _partner_user(row) if row else None

    async def active_admins(self) -> int:
        return int(
            await self.conn.fetchval(
                "SELECT count(*) FROM console_users WHERE partner_id = $1 AND role = 'admin' AND disabled_at IS NULL",
                self.partner_id,
            )
        )

    async def insert(
        self, email: str, display_name: str, role: Role, password_hash: str, language: str, time_zone: str
    ) -> User | None:
        """A new user with a one-time password; None when the email is taken (by any partner's user)."""
        row = await self.conn.fetchrow(
            "INSERT INTO console_users (partner_id, email, display_name, role, password_hash, must_change_password,"
            f" language, time_zone) VALUES ($1, $2, $3, $4, $5, true, $6, $7) ON CONFLICT DO NOTHING"
            f" RETURNING {_COLUMNS}",
            self.partner_id,
            email,
            display_name,
            str(role),
            password_hash,
            language,
            time_zone,
        )
        return _user(row) if row else None

    async def set_role(self, user_id: int, role: Role) -> None:
        await self.conn.execute(
            "UPDATE console_users SET role = $3 WHERE partner_id = $1 AND id = $2", self.partner_id, user_id, str(role)
        )

    async def set_disabled(self, user_id: int, disabled: bool) -> None:
        await self.conn.execute(
            "UPDATE console_users SET disabled_at = CASE WHEN $3 THEN now() END WHERE partner_id = $1 AND id = $2",
            self.partner_id,
            user_id,
            disabled,
        )

    async def record(self, actor: str, user_email: str, action: str, details: dict[str, Any]) -> None:
        await self.conn.execute(
            "INSERT INTO console_user_changes (partner_id, actor, user_email, action, details)"
            " VALUES ($1, $2, $3, $4, $5::jsonb)",
            self.partner_id,
            actor,
            user_email,
            action,
            _jsonb(details),
        )

    async def changes(self, limit: int) -> list[UserChange]:
        """The latest changes first."""
        rows = await self.conn.fetch(
            "SELECT at, actor, user_email, action, details::text AS details FROM console_user_changes"
            " WHERE partner_id = $1 ORDER BY id DESC LIMIT $2",
            self.partner_id,
            limit,
        )
        return [
            UserChange(row["at"], row["actor"], row["user_email"], row["action"], json.loads(row["details"]))
            for row in rows
        ]


def _partner_user(row: asyncpg.Record) -> PartnerUserRow:
    user = _user(row)
    return PartnerUserRow(
        user=user,
        state=user_state(row["disabled"], user.must_change_password),
        disabled=row["disabled"],
        last_sign_in_at=row["last_sign_in_at"],
        created_at=row["created_at"],
    )


class SessionRepository:
    """Sessions by the SHA-256 of their id (`id_hash`): the id itself is only ever in the browser's cookie."""

    def __init__(self, conn: DbConnection) -> None:
        self.conn = conn

    async def create(self, id_hash: bytes, user_id: int, address: str, user_agent: str) -> None:
        await self.conn.execute(
            "INSERT INTO console_sessions (id_hash, user_id, address, user_agent) VALUES ($1, $2, $3, $4)",
            id_hash,
            user_id,
            address,
            user_agent,
        )

    async def resume(self, id_hash: bytes, idle_timeout_s: int, lifetime_s: int) -> tuple[User, dict[str, Any]] | None:
        """The session's user and data if it is still alive (used within the idle timeout, younger than its
        lifetime), marking it used now: one statement checks and touches it."""
        row = await self.conn.fetchrow(
            f"UPDATE console_sessions s SET last_seen_at = now() FROM console_users u"
            f" WHERE s.id_hash = $1 AND u.id = s.user_id AND u.disabled_at IS NULL"
            f" AND s.last_seen_at > now() - make_interval(secs => $2)"
            f" AND s.created_at > now() - make_interval(secs => $3)"
            f" RETURNING {_USER_COLUMNS}, s.data::text AS data",
            id_hash,
            float(idle_timeout_s),
            float(lifetime_s),
        )
        return (_user(row), json.loads(row["data"])) if row else None

    async def save_data(self, id_hash: bytes, data: dict[str, Any]) -> None:
        await self.conn.execute(
            "UPDATE console_sessions SET data = $2::jsonb WHERE id_hash = $1", id_hash, _jsonb(data)
        )

    async def delete(self, id_hash: bytes) -> None:
        await self.conn.execute("DELETE FROM console_sessions WHERE id_hash = $1", id_hash)

    async def delete_of_user(self, user_id: int, keep: bytes | None = None) -> int:
        """End every session of the user but `keep`; how many ended."""
        ended = await self.conn.fetchval(
            "WITH ended AS (DELETE FROM console_sessions WHERE user_id = $1 AND id_hash IS DISTINCT FROM $2"
            " RETURNING 1) SELECT count(*) FROM ended",
            user_id,
            keep,
        )
        return int(ended)

    async def count_of_user(self, user_id: int) -> int:
        return int(await self.conn.fetchval("SELECT count(*) FROM console_sessions WHERE user_id = $1", user_id))

    async def delete_expired(self, idle_timeout_s: int, lifetime_s: int) -> None:
        await self.conn.execute(
            "DELETE FROM console_sessions WHERE last_seen_at < now() - make_interval(secs => $1)"
            " OR created_at < now() - make_interval(secs => $2)",
            float(idle_timeout_s),
            float(lifetime_s),
        )


class SignInRepository:
    """The record of sign-ins (`console_sign_ins`), which is also what throttles password guessing."""

    def __init__(self, conn: DbConnection) -> None:
        self.conn = conn

    async def lock_account(self, email: str) -> None:
        """Until the transaction ends, the attempts at one account wait for each other: fifty guesses sent at once
        are judged one after the other, each seeing the failures before it."""
        await self.conn.execute("SELECT pg_advisory_xact_lock(7202612, hashtext(lower($1)))", email)

    async def failures_of_account(self, email: str) -> Failures:
        """The account's failures since its last sign-in, within a day."""
        row = await self.conn.fetchrow(
            "SELECT count(*) AS count, max(at) AS last_at FROM console_sign_ins"
            " WHERE lower(email) = lower($1) AND outcome = 'failed' AND at > now() - interval '1 day'"
            " AND at > coalesce((SELECT max(at) FROM console_sign_ins"
            "  WHERE lower(email) = lower($1) AND outcome = 'signed_in'), '-infinity')",
            email,
        )
        return _failures(row)

    async def failures_of_address(self, address: str) -> Failures:
        """The address's failures within an hour, whichever accounts they tried (a sign-in does not reset them)."""
        row = await self.conn.fetchrow(
            "SELECT count(*) AS count, max(at) AS last_at FROM console_sign_ins"
            " WHERE address = $1 AND outcome = 'failed' AND at > now() - interval '1 hour'",
            address,
        )
        return _failures(row)

    async def now(self) -> datetime:
        """The time now (not the transaction's start: the attempt may have waited for the account's lock)."""
        moment: datetime = await self.conn.fetchval("SELECT clock_timestamp()")
        return moment

    async def record(self, email: str, address: str, outcome: str) -> None:
        await self.conn.execute(
            "INSERT INTO console_sign_ins (at, email, address, outcome) VALUES (clock_timestamp(), $1, $2, $3)",
            email,
            address,
            outcome,
        )

    async def delete_older_than(self, days: int) -> None:
        await self.conn.execute("DELETE FROM console_sign_ins WHERE at < now() - make_interval(days => $1)", days)


def _jsonb(data: dict[str, Any]) -> str:
    """`data` as JSON that jsonb takes: a NUL or a lone surrogate (a flash message quoting hostile input) becomes
    U+FFFD instead of failing the page."""
    text = json.dumps(data, ensure_ascii=False).replace("\\u0000", "\ufffd")
    return text.encode("utf-8", "replace").decode("utf-8")


def _failures(row: asyncpg.Record | None) -> Failures:
    return Failures(int(row["count"]), row["last_at"]) if row else Failures(0, None)
