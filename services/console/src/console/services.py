"""The console's use cases on its own data: users, passwords, preferences. Pages over the services' data call
the backends instead (`console.backends`)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from pwdlib import PasswordHash

from console.domain import (
    InvalidUser,
    Role,
    User,
    check_new_user,
    one_time_password,
    password_problem,
    valid_language,
    valid_time_zone,
)
from console.repository import UserRepository

# argon2id with pwdlib's recommended parameters; a hash made with older parameters is upgraded at sign-in.
_hasher = PasswordHash.recommended()
# Verified against when the email is unknown, so an unknown address costs the same time as a wrong password.
_DUMMY_HASH = _hasher.hash("no such user: the time of a real check")


@dataclass(frozen=True)
class NewCredentials:
    user: User
    password: str


class Users:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def get(self, user_id: int) -> User | None:
        async with self.pool.acquire() as conn:
            return await UserRepository(conn).by_id(user_id)

    async def create(
        self,
        email: str,
        role: Role,
        partner_id: str | None = None,
        display_name: str | None = None,
        *,
        password: str | None = None,
        language: str = "en",
    ) -> NewCredentials:
        """Create the user (or reset the one with this email) with a one-time password to change at first sign-in;
        a given `password` (the demo users of `make run`) need not be changed."""
        check_new_user(partner_id, email, role)
        chosen = password or one_time_password()
        async with self.pool.acquire() as conn:
            user = await UserRepository(conn).upsert(
                partner_id or None,
                email.strip(),
                display_name or email.split("@")[0],
                role,
                _hasher.hash(chosen),
                must_change_password=password is None,
                language=language,
            )
        return NewCredentials(user, chosen)

    async def authenticate(self, email: str, password: str) -> User | None:
        async with self.pool.acquire() as conn:
            repo = UserRepository(conn)
            found = await repo.credentials(email.strip())
            if found is None:
                _hasher.verify(password, _DUMMY_HASH)
                return None
            user, stored = found
            valid, new_hash = _hasher.verify_and_update(password, stored)
            if not valid:
                return None
            if new_hash is not None:
                await repo.rehash(user.id, new_hash)
            await repo.signed_in(user.id)
        return user

    async def change_password(self, user: User, current: str, new: str) -> User:
        """The user with the new password and a new session generation, which ends every other session of theirs.
        Raises InvalidUser naming the refused field."""
        if await self.authenticate(user.email, current) is None:
            raise InvalidUser("current", "the current password is not right")
        if problem := password_problem(new):
            raise InvalidUser("new", problem)
        if new == current:
            raise InvalidUser("new", "choose a password other than the current one")
        async with self.pool.acquire() as conn:
            return await UserRepository(conn).set_password(user.id, _hasher.hash(new))

    async def set_preferences(self, user: User, language: str, time_zone: str) -> None:
        if not valid_language(language):
            raise InvalidUser("language", f"unknown language '{language}'")
        if not valid_time_zone(time_zone):
            raise InvalidUser("time_zone", f"unknown time zone '{time_zone}'")
        async with self.pool.acquire() as conn:
            await UserRepository(conn).set_preferences(user.id, language, time_zone)
