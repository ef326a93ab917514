"""Sessions against the console's real database, in process (no browser): sessions live on the server, so signing
out, "sign out everywhere", a changed or reset password and the idle timeout end them at once, on every instance,
and a copied cookie is worth nothing after that."""

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
async def another_instance(console: FastAPI) -> AsyncIterator[FastAPI]:
    """A second console process on the same database, as behind a load balancer."""
    app = create_app(console.state.settings)
    async with app.router.lifespan_context(app):
        yield app


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console")


@pytest.fixture
async def browser(console: FastAPI) -> AsyncIterator[Browser]:
    """`await browser()`: a new client with its own cookie jar, like another browser."""
    clients: list[httpx.AsyncClient] = []

    async def open_one() -> httpx.AsyncClient:
        client = _client(console)
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


def _copy(client: httpx.AsyncClient, app: FastAPI) -> httpx.AsyncClient:
    """Another client holding a copy of `client`'s cookies: what an attacker who copied the cookie would send."""
    copy = _client(app)
    copy.cookies = httpx.Cookies(client.cookies)
    return copy


async def _sign_out(client: httpx.AsyncClient) -> None:
    answer = await client.post("/logout", data={"csrf_token": await _csrf(client, "/account")})
    assert answer.status_code == 303


async def test_the_cookie_holds_only_a_random_id(browser: Browser) -> None:
    client = await browser()
    await _sign_in(client)
    value = client.cookies["console_session"]
    assert len(value) == 43 and EMAIL.split("@")[0] not in value and "." not in value, value


async def test_a_copied_cookie_stops_working_when_its_session_signs_out(console: FastAPI, browser: Browser) -> None:
    victim = await browser()
    await _sign_in(victim)
    async with _copy(victim, console) as copied:
        assert await _signed_in(copied), "a copy works while the session lives (that is what a session is)"
        await _sign_out(victim)

        assert not await _signed_in(copied), "signed out on the server: the copy signs nobody in"
        refused = await copied.post("/account", data={"language": "ru", "time_zone": "UTC", "csrf_token": "x"})
        assert refused.status_code in (303, 403)
    assert not await _signed_in(victim)
    async with console.state.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM console_sessions") == 0


async def test_sign_out_everywhere_ends_every_session_of_the_user(console: FastAPI, browser: Browser) -> None:
    here, elsewhere = await browser(), await browser()
    await _sign_in(here)
    await _sign_in(elsewhere)
    assert "Signed in sessions, this one included: 2." in (await here.get("/account")).text

    answer = await here.post("/account/sessions/end", data={"csrf_token": await _csrf(here, "/account")})

    assert answer.status_code == 303 and answer.headers["location"] == "/login"
    assert not await _signed_in(here) and not await _signed_in(elsewhere)


async def test_end_sessions_of_a_user_is_a_hook_for_others(console: FastAPI, browser: Browser) -> None:
    client = await browser()
    await _sign_in(client)
    user = await Users(console.state.pool).get(1)
    assert user is not None

    assert await console.state.sessions.end_sessions_of(user.id) == 1

    assert not await _signed_in(client)


async def test_a_session_unused_for_the_idle_timeout_ends(console: FastAPI, browser: Browser) -> None:
    idle, used = await browser(), await browser()
    await _sign_in(idle)
    await _sign_in(used)
    timeout = console.state.settings.session_idle_timeout_s
    async with console.state.pool.acquire() as conn:  # one session was last used just over the timeout ago
        await conn.execute(
            "UPDATE console_sessions SET last_seen_at = now() - make_interval(secs => $1)"
            " WHERE id_hash = (SELECT id_hash FROM console_sessions ORDER BY created_at LIMIT 1)",
            float(timeout + 1),
        )

    assert not await _signed_in(idle)
    assert await _signed_in(used), "the other one was used just now"


async def test_a_session_ends_at_its_lifetime_however_busy(console: FastAPI, browser: Browser) -> None:
    client = await browser()
    await _sign_in(client)
    lifetime = console.state.settings.session_max_age_s
    async with console.state.pool.acquire() as conn:
        await conn.execute(
            "UPDATE console_sessions SET created_at = now() - make_interval(secs => $1)", float(lifetime + 1)
        )

    assert not await _signed_in(client)


async def test_sessions_hold_across_console_instances(console: FastAPI, another_instance: FastAPI) -> None:
    async with _client(console) as first:
        await _sign_in(first)
        async with _copy(first, another_instance) as same_browser_other_instance:
            assert await _signed_in(same_browser_other_instance), "the load balancer sent the next page elsewhere"
            await _sign_out(same_browser_other_instance)  # signed out on the second instance...

        assert not await _signed_in(first), "...is signed out on the first"


async def test_cookies_are_secure_over_https(console: FastAPI) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=console), base_url="https://console") as client:
        answer = await client.get("/login")
        assert "secure" in answer.headers["set-cookie"].lower()
        assert "httponly" in answer.headers["set-cookie"].lower()
    async with _client(console) as plain:  # a laptop over plain HTTP: a Secure cookie would never come back
        assert "secure" not in (await plain.get("/login")).headers["set-cookie"].lower()
