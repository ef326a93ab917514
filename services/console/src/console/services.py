"""The console's use cases on its own data: users, passwords, preferences, sessions and sign-ins. Pages over the
services' data call the backends instead (`console.backends`)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import asyncpg
from pwdlib import PasswordHash

from console.domain import (
    EMAIL_TAKEN,
    LAST_ADMIN,
    PARTNER_ROLES,
    PASSWORD_NOT_CURRENT,
    PASSWORD_UNCHANGED,
    UNKNOWN_LANGUAGE,
    UNKNOWN_ROLE,
    UNKNOWN_TIME_ZONE,
    InvalidUser,
    Role,
    Throttle,
    User,
    check_invitation,
    check_new_user,
    leaves_no_admin,
    one_time_password,
    password_problem,
    retry_after_s,
    valid_language,
    valid_time_zone,
)
from console.repository import (
    PartnerUserRepository,
    PartnerUserRow,
    SessionRepository,
    SignInRepository,
    UserChange,
    UserRepository,
)

# argon2id with pwdlib's recommended parameters; a hash made with older parameters is upgraded at sign-in.
_hasher = PasswordHash.recommended()
# Verified against when the email is unknown, so an unknown address costs the same time as a wrong password.
_DUMMY_HASH = _hasher.hash("no such user: the time of a real check")
# What the record of sign-ins keeps of an email, an address and a browser as typed or sent (anything longer is cut).
_MAX_RECORDED = 320


def _recordable(text: str) -> str:
    """`text` as PostgreSQL can store it (no NUL, no lone surrogate: such an email names nobody anyway), bounded."""
    cleaned = text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    return cleaned[:_MAX_RECORDED]


def session_hash(session_id: str) -> bytes:
    """How the database knows a session: the SHA-256 of its id (a random 256-bit token, so no salt is needed)."""
    return hashlib.sha256(session_id.encode()).digest()


@dataclass(frozen=True)
class NewCredentials:
    user: User
    password: str


@dataclass(frozen=True)
class SignIn:
    """An attempt's result: the user when the password was right, and how many seconds the next attempt must wait
    (non-zero when this one was refused unheard, or when its failure started or lengthened the wait)."""

    user: User | None
    retry_after_s: int = 0
    throttled: bool = False  # refused without checking the password: the wait was not over
    disabled: bool = False  # the password was right, but the partner's admin disabled the user


class Users:
    def __init__(self, pool: asyncpg.Pool, throttle: Throttle | None = None, sign_ins_kept_days: int = 90) -> None:
        self.pool = pool
        self.throttle = throttle or Throttle()
        self.sign_ins_kept_days = sign_ins_kept_days

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
        """Create the user (or reset the one with this email, ending every session of theirs) with a one-time
        password to change at first sign-in; a given `password` (the demo users of `make run`) need not be changed,
        and must pass the same rules as a password the user chooses."""
        check_new_user(partner_id, email, role)
        if password is not None and (problem := password_problem(password, email, display_name or "")):
            raise InvalidUser("password", problem)
        chosen = password or one_time_password()
        async with self.pool.acquire() as conn, conn.transaction():
            user = await UserRepository(conn).upsert(
                partner_id or None,
                email.strip(),
                display_name or email.split("@")[0],
                role,
                _hasher.hash(chosen),
                must_change_password=password is None,
                language=language,
            )
            await SessionRepository(conn).delete_of_user(user.id)
        return NewCredentials(user, chosen)

    async def sign_in(self, email: str, password: str, address: str) -> SignIn:
        """Check a password at the sign-in form, unless the account or the address must wait after too many
        failures; every attempt is recorded (time, email, address, outcome), and that record is the throttle's
        memory, shared by every console instance."""
        email, address = _recordable(email.strip()), _recordable(address)
        async with self.pool.acquire() as conn, conn.transaction():
            attempts = SignInRepository(conn)
            await attempts.lock_account(email)
            if wait := await self._wait(attempts, email, address):
                await attempts.record(email, address, "throttled")
                return SignIn(None, wait, throttled=True)
            user = await self._verify(UserRepository(conn), email, password)
            disabled = user is not None and await self._disabled(UserRepository(conn), email)
            if disabled:  # refused like a wrong password (it counts for the throttle), but told why
                user = None
            await attempts.record(email, address, "signed_in" if user else "failed")
            if user is not None:
                await UserRepository(conn).signed_in(user.id)
                await attempts.delete_older_than(self.sign_ins_kept_days)
                return SignIn(user)
            return SignIn(None, await self._wait(attempts, email, address), disabled=disabled)

    @staticmethod
    async def _disabled(repo: UserRepository, email: str) -> bool:
        found = await repo.credentials(email)
        return found is not None and found[2]

    async def _wait(self, attempts: SignInRepository, email: str, address: str) -> int:
        account = await attempts.failures_of_account(email)
        from_address = await attempts.failures_of_address(address)
        return retry_after_s(self.throttle, account, from_address, await attempts.now())

    @staticmethod
    async def _verify(repo: UserRepository, email: str, password: str) -> User | None:
        found = await repo.credentials(email)
        if found is None:
            _hasher.verify(password, _DUMMY_HASH)
            return None
        user, stored, _ = found
        valid, new_hash = _hasher.verify_and_update(password, stored)
        if not valid:
            return None
        if new_hash is not None:
            await repo.rehash(user.id, new_hash)
        return user

    async def change_password(self, user: User, current: str, new: str, keep_session: str | None = None) -> User:
        """The user with the new password; every other session of theirs ends, `keep_session` (the one that changed
        it) goes on. Raises InvalidUser naming the refused field."""
        if problem := password_problem(new, user.email, user.display_name):
            raise InvalidUser("new", problem)
        if new == current:
            raise InvalidUser("new", PASSWORD_UNCHANGED)
        async with self.pool.acquire() as conn, conn.transaction():
            repo = UserRepository(conn)
            if await self._verify(repo, _recordable(user.email), current) is None:
                raise InvalidUser("current", PASSWORD_NOT_CURRENT)
            changed = await repo.set_password(user.id, _hasher.hash(new))
            keep = session_hash(keep_session) if keep_session else None
            await SessionRepository(conn).delete_of_user(user.id, keep)
        return changed

    async def set_preferences(self, user: User, language: str, time_zone: str) -> None:
        if not valid_language(language):
            raise InvalidUser("language", UNKNOWN_LANGUAGE)
        if not valid_time_zone(time_zone):
            raise InvalidUser("time_zone", UNKNOWN_TIME_ZONE)
        async with self.pool.acquire() as conn:
            await UserRepository(conn).set_preferences(user.id, language, time_zone)


class NoSuchUser(Exception):
    """No user of this id in the admin's partner (another partner's user is no more visible than a missing one)."""


class PartnerAdmin:
    """What a partner's admin does to the partner's users: invite, change a role, disable and enable. Each change
    and its record (who, what, when) commit together; changes to one partner's users are judged one at a time, so
    the partner always keeps an admin who can sign in."""

    def __init__(self, pool: asyncpg.Pool, admin: User) -> None:
        assert admin.is_admin and admin.partner_id is not None
        self.pool = pool
        self.admin = admin
        self.partner_id = admin.partner_id

    async def users(self) -> list[PartnerUserRow]:
        async with self.pool.acquire() as conn:
            return await PartnerUserRepository(conn, self.partner_id).all()

    async def changes(self, limit: int = 50) -> list[UserChange]:
        async with self.pool.acquire() as conn:
            return await PartnerUserRepository(conn, self.partner_id).changes(limit)

    async def invite(self, email: str, role: str, display_name: str = "") -> NewCredentials:
        """A new user of the partner with a one-time password, to be changed at the first sign-in. Raises
        InvalidUser naming the refused field (an email some user has already: any partner's)."""
        email, display_name = email.strip(), display_name.strip()
        chosen_role = check_invitation(email, role, display_name)
        password = one_time_password()
        async with self.pool.acquire() as conn, conn.transaction():
            repo = PartnerUserRepository(conn, self.partner_id)
            user = await repo.insert(
                email,
                display_name or email.split("@")[0],
                chosen_role,
                _hasher.hash(password),
                self.admin.language,
                self.admin.time_zone,
            )
            if user is None:
                raise InvalidUser("email", EMAIL_TAKEN)
            await repo.record(self.admin.email, user.email, "invited", {"role": str(chosen_role)})
        return NewCredentials(user, password)

    async def change_role(self, user_id: int, role: str) -> PartnerUserRow:
        if role not in {r.value for r in PARTNER_ROLES}:
            raise InvalidUser("role", UNKNOWN_ROLE)
        new_role = Role(role)
        async with self.pool.acquire() as conn, conn.transaction():
            repo = PartnerUserRepository(conn, self.partner_id)
            target = await self._locked(repo, user_id)
            if target.user.role is new_role:
                return target
            if leaves_no_admin(target.user, target.disabled, await repo.active_admins(), new_role, target.disabled):
                raise InvalidUser("role", LAST_ADMIN)
            await repo.set_role(user_id, new_role)
            details = {"from": str(target.user.role), "to": str(new_role)}
            await repo.record(self.admin.email, target.user.email, "role_changed", details)
        return target

    async def disable(self, user_id: int) -> int:
        """Disable the user: every session of theirs ends in the same transaction, and they cannot sign in until
        enabled again. Returns how many sessions ended."""
        async with self.pool.acquire() as conn, conn.transaction():
            repo = PartnerUserRepository(conn, self.partner_id)
            target = await self._locked(repo, user_id)
            if target.disabled:
                return 0
            if leaves_no_admin(target.user, False, await repo.active_admins(), target.user.role, disabled=True):
                raise InvalidUser("state", LAST_ADMIN)
            await repo.set_disabled(user_id, True)
            ended = await SessionRepository(conn).delete_of_user(user_id)
            await repo.record(self.admin.email, target.user.email, "disabled", {"sessions_ended": ended})
        return ended

    async def enable(self, user_id: int) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            repo = PartnerUserRepository(conn, self.partner_id)
            target = await self._locked(repo, user_id)
            if not target.disabled:
                return
            await repo.set_disabled(user_id, False)
            await repo.record(self.admin.email, target.user.email, "enabled", {})

    @staticmethod
    async def _locked(repo: PartnerUserRepository, user_id: int) -> PartnerUserRow:
        await repo.lock()
        target = await repo.get(user_id)
        if target is None:
            raise NoSuchUser()
        return target


@dataclass(frozen=True)
class ResumedSession:
    user: User
    data: dict[str, Any]


class Sessions:
    """Server-side sessions: the browser holds a random id, the database the session (by the id's hash). A session
    ends when it is signed out, after `idle_timeout_s` unused, `lifetime_s` after sign-in, or when its user's
    sessions are ended (a password change or reset, "sign out everywhere", `end_sessions_of`)."""

    def __init__(self, pool: asyncpg.Pool, idle_timeout_s: int, lifetime_s: int) -> None:
        self.pool = pool
        self.idle_timeout_s = idle_timeout_s
        self.lifetime_s = lifetime_s

    async def open(self, user: User, address: str, user_agent: str) -> str:
        """A new session of `user`; returns its id, for the cookie. Sessions that expired meanwhile are cleared."""
        session_id = secrets.token_urlsafe(32)
        async with self.pool.acquire() as conn, conn.transaction():
            repo = SessionRepository(conn)
            await repo.delete_expired(self.idle_timeout_s, self.lifetime_s)
            await repo.create(session_hash(session_id), user.id, _recordable(address), _recordable(user_agent))
        return session_id

    async def resume(self, session_id: str) -> ResumedSession | None:
        """The session's user and data while it is alive (and it counts as used now), else None."""
        async with self.pool.acquire() as conn:
            found = await SessionRepository(conn).resume(session_hash(session_id), self.idle_timeout_s, self.lifetime_s)
        return ResumedSession(*found) if found else None

    async def save(self, session_id: str, data: dict[str, Any]) -> None:
        async with self.pool.acquire() as conn:
            await SessionRepository(conn).save_data(session_hash(session_id), data)

    async def end(self, session_id: str) -> None:
        async with self.pool.acquire() as conn:
            await SessionRepository(conn).delete(session_hash(session_id))

    async def end_sessions_of(self, user_id: int, keep: str | None = None) -> int:
        """End every session of the user (but `keep`'s, when given) at once, on every instance; how many ended.
        The hook for whatever must sign a user out: "sign out everywhere", and later an admin disabling a user."""
        async with self.pool.acquire() as conn:
            return await SessionRepository(conn).delete_of_user(user_id, session_hash(keep) if keep else None)

    async def count_of(self, user_id: int) -> int:
        async with self.pool.acquire() as conn:
            return await SessionRepository(conn).count_of_user(user_id)
