"""Who may do what in the console, and what a password must be. Pure: no I/O."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from enum import StrEnum
from zoneinfo import available_timezones

LANGUAGES = ("en", "ru")
MIN_PASSWORD_LENGTH = 12
_ALPHABET = string.ascii_letters + string.digits


class Role(StrEnum):
    MARKETER = "marketer"  # a partner's statuses, campaigns, orders and messages: read and change
    VIEWER = "viewer"  # the same pages, read only
    OPS = "ops"  # the platform's operators: the ops pages only, across partners; bound to no partner


@dataclass(frozen=True)
class User:
    id: int
    partner_id: str | None
    email: str
    display_name: str
    role: Role
    must_change_password: bool
    language: str
    time_zone: str
    session_generation: int = 0  # a session is valid only while it carries this (see 4002.session-generation.sql)

    @property
    def is_operator(self) -> bool:
        return self.role is Role.OPS

    @property
    def can_write(self) -> bool:
        return self.role is Role.MARKETER

    @property
    def backend_scopes(self) -> tuple[str, ...]:
        """The scopes of the partner token minted for this user's backend calls."""
        return ("read", "write") if self.can_write else ("read",)


class InvalidUser(ValueError):
    """A user that cannot exist: the message says which field and why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check_new_user(partner_id: str | None, email: str, role: Role) -> None:
    if role is Role.OPS and partner_id:
        raise InvalidUser("partner", "an ops user belongs to no partner: leave PARTNER out")
    if role is not Role.OPS and not partner_id:
        raise InvalidUser("partner", f"a {role} belongs to a partner: give PARTNER")
    if "@" not in email.strip("@"):
        raise InvalidUser("email", f"'{email}' is no email address")


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"at least {MIN_PASSWORD_LENGTH} characters"
    return None


def one_time_password() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(16))


def valid_language(language: str) -> bool:
    return language in LANGUAGES


def valid_time_zone(zone: str) -> bool:
    return zone in available_timezones()
