"""The console's own SQL: its users. It holds no order, status or campaign data."""

from __future__ import annotations

import asyncpg

from console.domain import Role, User
from servicekit.db import DbConnection

_COLUMNS = "id, partner_id, email, display_name, role, must_change_password, language, time_zone, session_generation"


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
        session_generation=row["session_generation"],
    )


class UserRepository:
    def __init__(self, conn: DbConnection) -> None:
        self.conn = conn

    async def by_id(self, user_id: int) -> User | None:
        row = await self.conn.fetchrow(f"SELECT {_COLUMNS} FROM console_users WHERE id = $1", user_id)
        return _user(row) if row else None

    async def credentials(self, email: str) -> tuple[User, str] | None:
        """The user with this email (any case) and their password hash."""
        row = await self.conn.fetchrow(
            f"SELECT {_COLUMNS}, password_hash FROM console_users WHERE lower(email) = lower($1)", email
        )
        return (_user(row), row["password_hash"]) if row else None

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
        """Create the user, or reset the one with this email (role, partner and password; its sessions end)."""
        row = await self.conn.fetchrow(
            f"INSERT INTO console_users (partner_id, email, display_name, role, password_hash, must_change_password,"
            f" language) VALUES ($1, $2, $3, $4, $5, $6, $7) "
            f"ON CONFLICT (lower(email)) DO UPDATE SET partner_id = EXCLUDED.partner_id,"
            f" display_name = EXCLUDED.display_name, role = EXCLUDED.role, password_hash = EXCLUDED.password_hash,"
            f" must_change_password = EXCLUDED.must_change_password,"
            f" session_generation = console_users.session_generation + 1 RETURNING {_COLUMNS}",
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
        """The new password; every session signed in with the old one ends (the generation moves on)."""
        row = await self.conn.fetchrow(
            "UPDATE console_users SET password_hash = $2, must_change_password = false,"
            f" session_generation = session_generation + 1 WHERE id = $1 RETURNING {_COLUMNS}",
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
