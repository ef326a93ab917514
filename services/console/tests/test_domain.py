"""Who may do what, and what a user must be: the console's rules, without I/O."""

from __future__ import annotations

import pytest

from console.domain import InvalidUser, Role, User, check_new_user, one_time_password, password_problem


def user(role: Role, partner: str | None = "shop") -> User:
    return User(1, partner, "a@b.example", "A", role, False, "en", "UTC")


def test_only_a_marketer_writes_and_a_viewers_token_only_reads() -> None:
    assert user(Role.MARKETER).backend_scopes == ("read", "write")
    assert user(Role.VIEWER).backend_scopes == ("read",)
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
    assert password_problem("long enough password") is None
    first, second = one_time_password(), one_time_password()
    assert len(first) == 16 and first != second
