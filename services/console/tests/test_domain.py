"""Who may do what, and what a user must be: the console's rules, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from console.domain import (
    PASSWORD_TOO_EASY,
    Failures,
    InvalidUser,
    Role,
    Throttle,
    User,
    check_new_user,
    one_time_password,
    password_problem,
    retry_after_s,
)


def user(role: Role, partner: str | None = "shop") -> User:
    return User(1, partner, "a@b.example", "A", role, False, "en", "UTC")


def test_a_viewer_reads_a_marketer_writes_and_an_admin_also_manages_clients() -> None:
    reads = {"statuses:read", "orders:read", "campaigns:read", "messages:read"}
    writes = {"statuses:write", "orders:write", "campaigns:write", "messages:write"}
    assert set(user(Role.VIEWER).backend_scopes) == reads
    assert set(user(Role.MARKETER).backend_scopes) == reads | writes
    assert set(user(Role.ADMIN).backend_scopes) == reads | writes | {"clients:manage", "webhooks:manage"}
    assert not user(Role.VIEWER).can_write
    assert user(Role.OPS, None).is_operator


def test_an_operator_has_no_partner_and_a_partner_user_has_one() -> None:
    with pytest.raises(InvalidUser, match="no partner"):
        check_new_user("shop", "ops@x.example", Role.OPS)
    with pytest.raises(InvalidUser, match="belongs to a partner"):
        check_new_user(None, "m@x.example", Role.MARKETER)
    with pytest.raises(InvalidUser, match="no email"):
        check_new_user("shop", "nobody", Role.VIEWER)
    check_new_user(None, "ops@x.example", Role.OPS)


def test_passwords() -> None:
    assert password_problem("short") is not None
    assert password_problem("correct-horse-battery-staple") is None
    assert password_problem("aaaaaaaaaaaa") == PASSWORD_TOO_EASY
    assert password_problem("Petrova.Anna") is None, "strong enough for someone else..."
    assert password_problem("Petrova.Anna", "anna.petrova@shop.example", "Anna Petrova") == PASSWORD_TOO_EASY
    assert password_problem("x" * 100_000) == PASSWORD_TOO_EASY, "judged by its beginning, without an error"
    first, second = one_time_password(), one_time_password()
    assert len(first) == 16 and first != second


def test_the_passwords_make_user_makes_pass_the_rules() -> None:
    assert all(password_problem(one_time_password()) is None for _ in range(200))


def test_each_failure_past_the_free_ones_doubles_the_wait_up_to_the_cap() -> None:
    throttle = Throttle(free_per_account=5, free_per_address=20, max_delay_s=900)
    assert [throttle.delay_s(n, 5) for n in (0, 4, 5, 6, 7, 9, 30)] == [0, 0, 32, 64, 128, 512, 900]


def test_the_wait_is_the_longer_of_the_accounts_and_the_addresss() -> None:
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    throttle = Throttle()
    none = Failures(0, None)
    assert retry_after_s(throttle, none, none, now) == 0
    account = Failures(6, now - timedelta(seconds=10))  # a 64 s wait, 10 s of it over
    assert retry_after_s(throttle, account, none, now) == 54
    address = Failures(21, now - timedelta(seconds=1))  # a 64 s wait, 1 s of it over
    assert retry_after_s(throttle, account, address, now) == 63
    assert retry_after_s(throttle, Failures(6, now - timedelta(seconds=65)), none, now) == 0, "over"
