"""Sign-in against the console's real database, in process: password guessing is throttled per account and per
address with growing waits, shared by every instance; every attempt is recorded; trivial passwords are refused."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from console.app import create_app
from console.domain import InvalidUser, Role
from console.services import Users
from console.settings import ConsoleSettings
from devtools.pytest_plugin import Infrastructure

PASSWORD = "correct-horse-battery-staple"
EMAIL = "marketer@acme.example"
OTHER = "viewer@acme.example"


@pytest.fixture
async def settings(infrastructure: Infrastructure, database: str) -> ConsoleSettings:
    return ConsoleSettings(
        database_url=database,
        kafka_bootstrap_servers=infrastructure.kafka_bootstrap,
        sign_in_free_failures_per_account=5,
        sign_in_free_failures_per_address=10,
    )


@pytest.fixture
async def console(settings: ConsoleSettings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await Users(app.state.pool).create(EMAIL, Role.MARKETER, "acme", password=PASSWORD)
        await Users(app.state.pool).create(OTHER, Role.VIEWER, "acme", password=PASSWORD)
        yield app


def _client(app: FastAPI, address: str = "203.0.113.7", language: str = "en") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://console", headers={"Accept-Language": language})


async def _csrf(client: httpx.AsyncClient, path: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', (await client.get(path)).text)
    assert found, f"no CSRF token on {path}"
    return found.group(1)


async def _sign_in(client: httpx.AsyncClient, email: str = EMAIL, password: str = PASSWORD) -> httpx.Response:
    form = {"email": email, "password": password, "csrf_token": await _csrf(client, "/login")}
    return await client.post("/login", data=form)


async def test_after_five_failures_an_account_waits_longer_and_longer(console: FastAPI) -> None:
    async with _client(console) as client:
        for _ in range(4):
            assert (await _sign_in(client, password="wrong")).status_code == 401
        fifth = await _sign_in(client, password="wrong")
        assert fifth.status_code == 401 and fifth.headers["retry-after"] == "32", "the fifth failure starts a wait"
        assert "try again in 32 seconds" in fifth.text

        refused = await _sign_in(client)  # the right password, during the wait: not even checked
        assert refused.status_code == 429
        assert 0 < int(refused.headers["retry-after"]) <= 32
        assert "Too many failed sign-ins: try again in" in refused.text

        async with console.state.pool.acquire() as conn:  # the wait is over: one more failure doubles it
            await conn.execute("UPDATE console_sign_ins SET at = at - interval '33 seconds'")
        assert (await _sign_in(client, password="wrong")).headers["retry-after"] == "64"

        async with console.state.pool.acquire() as conn:
            await conn.execute("UPDATE console_sign_ins SET at = at - interval '65 seconds'")
        assert (await _sign_in(client)).status_code == 303, "the right password once the wait is over"
        assert (await _sign_in(client, password="wrong")).status_code == 401
        assert "retry-after" not in (await _sign_in(client, password="wrong")).headers, "a sign-in starts afresh"


async def test_the_wait_is_said_in_russian_too(console: FastAPI) -> None:
    async with _client(console, language="ru") as client:
        for _ in range(5):
            await _sign_in(client, password="wrong")
        refused = await _sign_in(client)
        assert refused.status_code == 429
        assert "Слишком много неудачных попыток входа. Осталось подождать: 3" in refused.text


async def test_an_address_that_tries_many_accounts_waits(console: FastAPI) -> None:
    async with _client(console, address="198.51.100.9") as guesser, _client(console) as someone_else:
        for number in range(10):  # one failure each at ten accounts: no account reaches its limit
            assert (await _sign_in(guesser, email=f"user{number}@acme.example", password="x")).status_code == 401
        assert (await _sign_in(guesser)).status_code == 429, "the address waits, whichever account it tries"
        assert (await _sign_in(someone_else)).status_code == 303, "the same account from elsewhere is not held up"


async def test_the_throttle_is_shared_by_every_instance(console: FastAPI, settings: ConsoleSettings) -> None:
    other = create_app(settings)
    async with (
        other.router.lifespan_context(other),
        _client(console) as first,
        _client(other, address="192.0.2.1") as second,
    ):
        for _ in range(5):
            await _sign_in(first, password="wrong")
        assert (await _sign_in(second)).status_code == 429


async def test_every_attempt_is_recorded(console: FastAPI) -> None:
    async with _client(console) as client:
        await _sign_in(client, password="wrong")
        await _sign_in(client, email="nobody\x00@acme.example")  # a NUL names nobody: a failure, not a 500
        await _sign_in(client)
    async with console.state.pool.acquire() as conn:
        rows = await conn.fetch("SELECT email, address, outcome FROM console_sign_ins ORDER BY id")
    assert [tuple(row) for row in rows] == [
        (EMAIL, "203.0.113.7", "failed"),
        ("nobody\ufffd@acme.example", "203.0.113.7", "failed"),
        (EMAIL, "203.0.113.7", "signed_in"),
    ]


@pytest.mark.parametrize(
    ("language", "message"),
    [("en", "Too easy to guess"), ("ru", "Слишком легко угадать")],
)
async def test_a_trivial_password_is_refused_with_a_reason(console: FastAPI, language: str, message: str) -> None:
    async with _client(console, language=language) as client:
        await _sign_in(client)
        form = {"language": language, "csrf_token": await _csrf(client, "/account")}
        await client.post("/account/language", data=form)
        for trivial in ("aaaaaaaaaaaa", "password1234", "qwertyuiop12", "acme-marketer"):
            form = {"current": PASSWORD, "new": trivial, "repeat": trivial}
            answer = await client.post("/account/password", data=form | {"csrf_token": await _csrf(client, "/account")})
            assert answer.status_code == 422, trivial
            assert message in answer.text, trivial


async def test_make_user_refuses_a_trivial_given_password(console: FastAPI) -> None:
    with pytest.raises(InvalidUser, match="Too easy to guess"):
        await Users(console.state.pool).create("ops@platform.example", Role.OPS, password="aaaaaaaaaaaa")
