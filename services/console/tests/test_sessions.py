"""Sessions against the console's real database, in process (no browser): a changed or reset password ends every
session signed in before it, and only those."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from fastapi import FastAPI

from console.app import create_app
from console.domain import Role
from console.services import Users
from console.settings import ConsoleSettings
from devtools.pytest_plugin import Infrastructure

PASSWORD = "correct-horse-battery-staple"
NEW_PASSWORD = "a-new-password-of-mine"
EMAIL = "marketer@acme.example"

Browser = Callable[[], Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def console(infrastructure: Infrastructure, database: str) -> AsyncIterator[FastAPI]:
    settings = ConsoleSettings(database_url=database, kafka_bootstrap_servers=infrastructure.kafka_bootstrap)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await Users(app.state.pool).create(EMAIL, Role.MARKETER, "acme", password=PASSWORD)
        yield app


@pytest.fixture
async def browser(console: FastAPI) -> AsyncIterator[Browser]:
    """`await browser()`: a new client with its own cookie jar, like another browser."""
    clients: list[httpx.AsyncClient] = []

    async def open_one() -> httpx.AsyncClient:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=console), base_url="http://console")
        clients.append(client)
        return client

    yield open_one
    for client in clients:
        await client.aclose()


async def _csrf(client: httpx.AsyncClient, path: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', (await client.get(path)).text)
    assert found, f"no CSRF token on {path}"
    return found.group(1)


async def _sign_in(client: httpx.AsyncClient, password: str = PASSWORD) -> httpx.Response:
    form = {"email": EMAIL, "password": password, "next": "/account", "csrf_token": await _csrf(client, "/login")}
    return await client.post("/login", data=form)


async def _signed_in(client: httpx.AsyncClient) -> bool:
    answer = await client.get("/account")
    assert answer.status_code in (200, 303), answer.text
    return answer.status_code == 200


async def _change_password(client: httpx.AsyncClient, current: str, new: str) -> httpx.Response:
    form = {"current": current, "new": new, "repeat": new, "csrf_token": await _csrf(client, "/account/password")}
    return await client.post("/account/password", data=form)


async def test_changing_the_password_ends_every_other_session_and_keeps_this_one(browser: Browser) -> None:
    here, elsewhere = await browser(), await browser()
    assert (await _sign_in(here)).status_code == 303
    assert (await _sign_in(elsewhere)).status_code == 303
    assert await _signed_in(here) and await _signed_in(elsewhere)

    assert (await _change_password(here, PASSWORD, NEW_PASSWORD)).status_code == 303

    assert await _signed_in(here), "the session that changed the password goes on"
    answer = await elsewhere.get("/account")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login"), "the other one ended"
    assert (await _sign_in(elsewhere, PASSWORD)).status_code == 401, "the old password no longer signs in"
    assert (await _sign_in(elsewhere, NEW_PASSWORD)).status_code == 303
    assert await _signed_in(elsewhere) and await _signed_in(here)


async def test_a_refused_password_change_ends_no_session(browser: Browser) -> None:
    here, elsewhere = await browser(), await browser()
    await _sign_in(here)
    await _sign_in(elsewhere)

    assert (await _change_password(here, "not-the-password", NEW_PASSWORD)).status_code == 422

    assert await _signed_in(here) and await _signed_in(elsewhere)


async def test_a_reset_by_make_user_ends_the_users_sessions(console: FastAPI, browser: Browser) -> None:
    signed_in = await browser()
    await _sign_in(signed_in)
    assert await _signed_in(signed_in)

    reset = await Users(console.state.pool).create(EMAIL, Role.MARKETER, "acme")  # `make user` for the same email

    answer = await signed_in.get("/account")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login"), (
        "signed out, not asked to change"
    )
    assert (await _sign_in(signed_in, reset.password)).status_code == 303
    assert (await signed_in.get("/account")).headers["location"] == "/account/password", "the new one-time password"
