"""Identity's rules without I/O: the token request, scopes, and the signing keys' schedule."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from identity.domain import (
    InvalidScope,
    KeyTimes,
    OAuthError,
    due_for_rotation,
    new_client_id,
    new_client_secret,
    parse_form,
    plan_rotation,
    published_at,
    requested_scopes,
    signing_key_at,
    token_request,
)

# Fixed, not new_client_id(): the tests' ids must be the same in each pytest-xdist worker.
CLIENT = "cli_ZgxupXlRnvDmgHZ4AhPe12Ba"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def test_ids_and_secrets_are_prefixed_and_random() -> None:
    assert CLIENT.startswith("cli_") and len(CLIENT) == 28
    secrets = {new_client_secret() for _ in range(100)}
    assert len(secrets) == 100
    assert all(s.startswith("cs_") and len(s) == 46 for s in secrets)


def test_basic_credentials_are_form_decoded() -> None:
    request = token_request({"grant_type": "client_credentials"}, _basic(CLIENT, "cs_a%2Bb%3Ac"))
    assert (request.client_id, request.client_secret, request.method) == (CLIENT, "cs_a+b:c", "client_secret_basic")


def test_post_credentials() -> None:
    form = {"grant_type": "client_credentials", "client_id": CLIENT, "client_secret": "s", "scope": "orders:read"}
    request = token_request(form, None)
    assert (request.method, request.scope) == ("client_secret_post", "orders:read")


@pytest.mark.parametrize(
    ("form", "authorization", "error"),
    [
        ({}, None, "invalid_request"),
        ({"grant_type": "authorization_code"}, None, "unsupported_grant_type"),
        ({"grant_type": "client_credentials"}, None, "invalid_client"),
        ({"grant_type": "client_credentials", "client_secret": "s"}, None, "invalid_request"),
        (
            {"grant_type": "client_credentials", "client_id": CLIENT, "client_secret": "s"},
            _basic(CLIENT, "s"),
            "invalid_request",
        ),
        ({"grant_type": "client_credentials", "client_id": new_client_id()}, _basic(CLIENT, "s"), "invalid_request"),
        ({"grant_type": "client_credentials"}, "Basic bm8tY29sb24=", "invalid_client"),
        ({"grant_type": "client_credentials"}, _basic("someone", "s"), "invalid_client"),
        ({"grant_type": "client_credentials"}, _basic(CLIENT, ""), "invalid_client"),
        ({"grant_type": "client_credentials"}, _basic(CLIENT, "s" * 201), "invalid_client"),
        ({"grant_type": "client_credentials"}, "Digest x", "invalid_client"),
    ],
)
def test_refused_token_requests(form: dict[str, str], authorization: str | None, error: str) -> None:
    with pytest.raises(OAuthError) as refused:
        token_request(form, authorization)
    assert refused.value.error == error
    assert refused.value.status == (401 if error == "invalid_client" else 400)


def test_a_parameter_given_twice_is_refused_and_an_unrecognized_one_ignored() -> None:
    assert parse_form([("grant_type", "1"), ("scope", "2")]) == {"grant_type": "1", "scope": "2"}
    with pytest.raises(OAuthError):
        parse_form([("scope", "1"), ("scope", "1")])
    assert parse_form([("grant_type", "1"), ("extra", "a"), ("extra", "b")]) == {"grant_type": "1"}


def test_scopes_narrow_but_never_widen() -> None:
    granted = ["orders:write", "orders:read"]
    assert requested_scopes(None, granted) == ["orders:read", "orders:write"]
    assert requested_scopes("", granted) == ["orders:read", "orders:write"]
    assert requested_scopes("orders:read", granted) == ["orders:read"]
    for asked in ("orders:read campaigns:read", "nonsense", "orders:read  orders:write"):
        with pytest.raises(InvalidScope):
            requested_scopes(asked, granted)


def _key(
    kid: str, signs_from: datetime, signs_until: datetime | None = None, published_until: datetime | None = None
) -> KeyTimes:
    return KeyTimes(kid, signs_from, signs_from, signs_until, published_until)


def test_the_newest_key_whose_time_has_come_signs_and_a_retired_one_stays_published() -> None:
    ahead, outlives = timedelta(hours=1), timedelta(minutes=16)
    first = _key("a", T0)
    plan = plan_rotation([first], T0 + timedelta(days=30), ahead, outlives)
    assert plan.retiring == "a"
    rotated_at = T0 + timedelta(days=30)
    assert plan.signs_from == rotated_at + ahead
    old = _key("a", T0, plan.signs_from, plan.retiring_published_until)
    new = KeyTimes("b", rotated_at, plan.signs_from, None, None)
    keys = [old, new]

    assert signing_key_at(keys, rotated_at + timedelta(minutes=59)) == old
    assert [k.kid for k in published_at(keys, rotated_at)] == ["a", "b"]  # published ahead
    assert signing_key_at(keys, plan.signs_from) == new
    assert [k.kid for k in published_at(keys, plan.signs_from + outlives - timedelta(seconds=1))] == ["a", "b"]
    assert [k.kid for k in published_at(keys, plan.signs_from + outlives)] == ["b"]


def test_the_first_key_signs_at_once() -> None:
    plan = plan_rotation([], T0, timedelta(hours=1), timedelta(minutes=16))
    assert (plan.signs_from, plan.retiring) == (T0, None)


def test_rotation_by_age_waits_for_the_age_and_for_no_pending_key() -> None:
    month = timedelta(days=30)
    current = _key("a", T0)
    assert not due_for_rotation([current], T0 + month - timedelta(seconds=1), month)
    assert due_for_rotation([current], T0 + month, month)
    pending = _key("b", T0 + month + timedelta(hours=1))
    assert not due_for_rotation([current, pending], T0 + month, month)
    assert not due_for_rotation([current], T0 + month, None)
    assert due_for_rotation([], T0, month)
