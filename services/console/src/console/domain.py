"""Who may do what in the console, what a password must be, and how long a guesser waits. Pure: no I/O."""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import available_timezones

from zxcvbn import zxcvbn

from contracts.identity import Scope

LANGUAGES = ("en", "ru")
MIN_PASSWORD_LENGTH = 12
# zxcvbn's score from 0 (guessed at once) to 4; 3 is "safely unguessable: moderate protection from an offline attack".
MIN_PASSWORD_SCORE = 3
# The estimator takes so many characters at most; a password longer than that is judged by its beginning.
_ESTIMATED_CHARACTERS = 72  # zxcvbn refuses a longer one (a ValueError)
_ALPHABET = string.ascii_letters + string.digits


def N_(message: str) -> str:
    """Marks a message for extraction where it is defined; it is translated where it is shown (`Page.gettext`)."""
    return message


PASSWORD_TOO_SHORT = N_("at least 12 characters")
PASSWORD_TOO_EASY = N_(
    "Too easy to guess: repeated or adjacent keys, common words and passwords, names, dates and your email are tried"
    " first. Use four or more unrelated words, or a password manager's random password."
)
PASSWORD_NOT_CURRENT = N_("The current password is not right.")
PASSWORDS_DIFFER = N_("The two new passwords differ.")
PASSWORD_UNCHANGED = N_("Choose a password other than the current one.")
UNKNOWN_LANGUAGE = N_("Choose one of the languages listed.")
UNKNOWN_TIME_ZONE = N_("Choose one of the time zones listed.")


READ_SCOPES = tuple(s.value for s in Scope if s.value.endswith(":read"))
MARKETER_WRITE_SCOPES = (Scope.STATUSES_WRITE.value, Scope.ORDERS_WRITE.value, Scope.CAMPAIGNS_WRITE.value,
                         Scope.MESSAGES_WRITE.value)  # fmt: skip


class Role(StrEnum):
    ADMIN = "admin"  # a partner's marketer who also manages the partner's users and API clients
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

    @property
    def is_operator(self) -> bool:
        return self.role is Role.OPS

    @property
    def can_write(self) -> bool:
        return self.role in (Role.MARKETER, Role.ADMIN)

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def backend_scopes(self) -> tuple[str, ...]:
        """The scopes of the token the console gets from identity for this user's backend calls: a viewer reads, a
        marketer also changes statuses, orders, campaigns and messages, an admin also manages API clients and
        webhooks."""
        if self.role is Role.ADMIN:
            return tuple(s.value for s in Scope)
        return READ_SCOPES + (MARKETER_WRITE_SCOPES if self.can_write else ())


class InvalidUser(ValueError):
    """A user that cannot exist: the message says which field and why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check_new_user(partner_id: str | None, email: str, role: Role) -> None:
    if role is Role.OPS and partner_id:
        raise InvalidUser("partner", "an ops user belongs to no partner: leave PARTNER out")
    if role is not Role.OPS and not partner_id:
        raise InvalidUser("partner", f"{'an' if role is Role.ADMIN else 'a'} {role} belongs to a partner: give PARTNER")
    if "@" not in email.strip("@"):
        raise InvalidUser("email", f"'{email}' is no email address")


# --- a partner's admin and the partner's users -------------------------------------------------------------------

# The roles a partner's admin gives (an operator is made by `make user` only: it belongs to no partner).
PARTNER_ROLES = (Role.ADMIN, Role.MARKETER, Role.VIEWER)
MAX_EMAIL_LENGTH = 254  # RFC 5321's limit on a path, less its brackets
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
BAD_EMAIL = N_("Enter an email address, such as anna@example.com.")
EMAIL_TAKEN = N_("A user with this email exists already.")
UNKNOWN_ROLE = N_("Choose one of the roles listed.")
NAME_TOO_LONG = N_("At most 100 characters.")
LAST_ADMIN = N_("You are the partner's last admin: make another user an admin first.")


class UserState(StrEnum):
    ACTIVE = "active"
    INVITED = "invited"  # has not yet replaced the one-time password
    DISABLED = "disabled"  # cannot sign in; their sessions ended when they were disabled


def user_state(disabled: bool, must_change_password: bool) -> UserState:
    if disabled:
        return UserState.DISABLED
    return UserState.INVITED if must_change_password else UserState.ACTIVE


def check_invitation(email: str, role: str, display_name: str) -> Role:
    """The role of a user a partner's admin invites; raises InvalidUser naming the refused field."""
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(email) or any(ord(c) < 32 or c == "\x7f" for c in email):
        raise InvalidUser("email", BAD_EMAIL)
    if role not in {r.value for r in PARTNER_ROLES}:
        raise InvalidUser("role", UNKNOWN_ROLE)
    if len(display_name) > 100 or "\x00" in display_name:
        raise InvalidUser("display_name", NAME_TOO_LONG)
    return Role(role)


def leaves_no_admin(target: User, target_disabled: bool, active_admins: int, becomes: Role, disabled: bool) -> bool:
    """Whether changing `target` (to role `becomes`, disabled or not) leaves its partner without an admin who can
    sign in: `active_admins` counts the partner's admins not disabled, `target` among them if it is one."""
    was_active_admin = target.role is Role.ADMIN and not target_disabled
    stays_active_admin = becomes is Role.ADMIN and not disabled
    return was_active_admin and not stays_active_admin and active_admins <= 1


def password_problem(password: str, *personal: str) -> str | None:
    """Why a new password is refused, or None: too short, or too easy to guess by zxcvbn's estimate (which also
    tries the `personal` words: the user's email and name)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return PASSWORD_TOO_SHORT
    words = [part for word in personal for part in (word, *re.split(r"[@.\s_-]+", word)) if part]
    if zxcvbn(password[:_ESTIMATED_CHARACTERS], user_inputs=words)["score"] < MIN_PASSWORD_SCORE:
        return PASSWORD_TOO_EASY
    return None


def one_time_password() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(16))


def valid_language(language: str) -> bool:
    return language in LANGUAGES


def valid_time_zone(zone: str) -> bool:
    return zone in available_timezones()


@dataclass(frozen=True)
class Throttle:
    """How sign-in failures slow the next attempt down. Past `free` failures, each further one doubles the wait,
    from 2**FIRST_DELAY_EXPONENT seconds up to `max_delay_s`: a person who mistyped waits little, a guesser a lot."""

    free_per_account: int = 5  # failures of one account since its last sign-in (within a day)
    free_per_address: int = 20  # failures from one address within an hour (an office shares one address)
    max_delay_s: int = 900

    FIRST_DELAY_EXPONENT = 5  # the first wait: 32 seconds

    def delay_s(self, failures: int, free: int) -> int:
        if failures < free:
            return 0
        return int(min(2 ** (failures - free + self.FIRST_DELAY_EXPONENT), self.max_delay_s))


@dataclass(frozen=True)
class Failures:
    """The failed sign-ins that count for one account or one address: how many, and when the last one was."""

    count: int
    last_at: datetime | None


def retry_after_s(throttle: Throttle, account: Failures, address: Failures, now: datetime) -> int:
    """Seconds to wait before the next attempt (0: it may go ahead), the longer of the account's and the address's."""
    waits = [0]
    for failures, free in ((account, throttle.free_per_account), (address, throttle.free_per_address)):
        delay = throttle.delay_s(failures.count, free)
        if delay and failures.last_at is not None:
            remaining = failures.last_at + timedelta(seconds=delay) - now
            waits.append(max(0, int(remaining.total_seconds() + 0.999)))
    return max(waits)
