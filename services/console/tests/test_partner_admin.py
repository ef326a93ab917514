"""A partner's admin and the partner's users, in process on the console's real database: the partner always keeps
an admin who can sign in, disabling a user ends every session of theirs at once and refuses their sign-in, an
invited user must replace the one-time password, every change is recorded and shown, and only admins see these
pages."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from fastapi import FastAPI

from console.app import create_app
from console.domain import Role
from console.services import PartnerAdmin, Users
from console.settings import ConsoleSettings
from devtools.pytest_plugin import Infrastructure

PASSWORD = "correct-horse-battery-staple"
ADMIN = "admin@acme.example"
MARKETER = "marketer@acme.example"
VIEWER = "viewer@acme.example"
OTHER_PARTNERS_USER = "marketer@other.example"

Browser = Callable[[], Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def console(infrastructure: Infrastructure, database: str) -> AsyncIterator[FastAPI]:
    settings = ConsoleSettings(database_url=database, kafka_bootstrap_servers=infrastructure.kafka_bootstrap)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        users = Users(app.state.pool)
        await users.create(ADMIN, Role.ADMIN, "acme", password=PASSWORD)
        await users.create(MARKETER, Role.MARKETER, "acme", password=PASSWORD)
        await users.create(VIEWER, Role.VIEWER, "acme", password=PASSWORD)
        await users.create(OTHER_PARTNERS_USER, Role.MARKETER, "other", password=PASSWORD)
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


async def _sign_in(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    form = {"email": email, "password": password, "next": "/account", "csrf_token": await _csrf(client, "/login")}
    return await client.post("/login", data=form)


async def _signed_in_as(browser: Browser, email: str) -> httpx.AsyncClient:
    client = await browser()
    assert (await _sign_in(client, email)).status_code == 303
    return client


async def _signed_in(client: httpx.AsyncClient) -> bool:
    answer = await client.get("/account")
    assert answer.status_code in (200, 303), answer.text
    return answer.status_code == 200


async def _post(client: httpx.AsyncClient, path: str, **form: str) -> httpx.Response:
    return await client.post(path, data={**form, "csrf_token": await _csrf(client, "/account")})


async def _id_of(console: FastAPI, email: str) -> int:
    async with console.state.pool.acquire() as conn:
        user_id: int = await conn.fetchval("SELECT id FROM console_users WHERE email = $1", email)
    return user_id


async def test_the_last_admin_can_neither_demote_nor_disable_themselves(console: FastAPI, browser: Browser) -> None:
    admin = await _signed_in_as(browser, ADMIN)
    me = await _id_of(console, ADMIN)

    demoted = await _post(admin, f"/settings/users/{me}/role", role="marketer")
    assert demoted.status_code == 409
    assert "last admin" in demoted.text and f'id="user-{me}-error"' in demoted.text, "said beside the role"
    disabled = await _post(admin, f"/settings/users/{me}/disable")
    assert disabled.status_code == 409 and "last admin" in disabled.text
    assert await _signed_in(admin)
    assert (await Users(console.state.pool).get(me)).role is Role.ADMIN  # type: ignore[union-attr]

    # With a second admin, the first may step down.
    marketer = await _id_of(console, MARKETER)
    assert (await _post(admin, f"/settings/users/{marketer}/role", role="admin")).status_code == 303
    assert (await _post(admin, f"/settings/users/{me}/role", role="viewer")).status_code == 303
    assert (await admin.get("/settings/users")).status_code == 403, "a viewer now"
    assert (await Users(console.state.pool).get(me)).role is Role.VIEWER  # type: ignore[union-attr]


async def test_two_admins_demoting_each_other_at_once_leave_one_admin(console: FastAPI) -> None:
    users = Users(console.state.pool)
    first = (await users.create("first@acme.example", Role.ADMIN, "acme", password=PASSWORD)).user
    async with console.state.pool.acquire() as conn:  # the fixture's admin out of the way: two admins left
        await conn.execute("UPDATE console_users SET role = 'marketer' WHERE email = $1", ADMIN)
    second = (await users.create("second@acme.example", Role.ADMIN, "acme", password=PASSWORD)).user

    outcomes = await asyncio.gather(
        PartnerAdmin(console.state.pool, first).change_role(second.id, "viewer"),
        PartnerAdmin(console.state.pool, second).change_role(first.id, "viewer"),
        return_exceptions=True,
    )

    assert sorted(type(outcome).__name__ for outcome in outcomes) == ["InvalidUser", "PartnerUserRow"]
    async with console.state.pool.acquire() as conn:
        admins = await conn.fetchval("SELECT count(*) FROM console_users WHERE partner_id = 'acme' AND role = 'admin'")
    assert admins == 1


async def test_disabling_a_user_ends_their_sessions_at_once_and_refuses_their_sign_in(
    console: FastAPI, browser: Browser
) -> None:
    admin = await _signed_in_as(browser, ADMIN)
    here, elsewhere = await _signed_in_as(browser, MARKETER), await _signed_in_as(browser, MARKETER)
    marketer = await _id_of(console, MARKETER)

    assert await console.state.sessions.count_of(marketer) == 2
    assert (await _post(admin, f"/settings/users/{marketer}/disable")).status_code == 303

    assert await console.state.sessions.count_of(marketer) == 0, "their sessions are deleted, not only refused"
    for session in (here, elsewhere):
        answer = await session.get("/account")
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login"), "signed out"
    refused = await _sign_in(await browser(), MARKETER)
    assert refused.status_code == 401 and "Your account is disabled" in refused.text
    wrong = await _sign_in(await browser(), MARKETER, "not-the-password-at-all")
    assert wrong.status_code == 401 and "disabled" not in wrong.text, "a wrong password learns nothing"
    listing = (await admin.get("/settings/users")).text
    assert re.search(rf'data-email="{MARKETER}".*?Disabled', listing, re.S)

    assert (await _post(admin, f"/settings/users/{marketer}/enable")).status_code == 303
    assert (await _sign_in(await browser(), MARKETER)).status_code == 303

    changes = (await admin.get("/settings/users")).text
    assert f"disabled {MARKETER}" in changes and f"enabled {MARKETER}" in changes and ADMIN in changes


async def test_make_user_enables_a_disabled_user_again(console: FastAPI, browser: Browser) -> None:
    admin = await _signed_in_as(browser, ADMIN)
    await _post(admin, f"/settings/users/{await _id_of(console, VIEWER)}/disable")

    reset = await Users(console.state.pool).create(VIEWER, Role.VIEWER, "acme")  # an operator's `make user`

    assert (await _sign_in(await browser(), VIEWER, reset.password)).status_code == 303


async def test_an_invited_user_signs_in_with_the_one_time_password_and_must_replace_it(
    console: FastAPI, browser: Browser
) -> None:
    admin = await _signed_in_as(browser, ADMIN)

    answer = await _post(admin, "/settings/users", email="new@acme.example", role="marketer", display_name="New")

    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    found = re.search(r'id="one-time-password" class="secret" readonly value="([A-Za-z0-9]{16})"', answer.text)
    assert found, answer.text
    invited = await browser()
    assert (await _sign_in(invited, "new@acme.example", found.group(1))).status_code == 303
    assert (await invited.get("/messages")).headers["location"] == "/account/password"
    assert "invited new@acme.example as marketer" in (await admin.get("/settings/users")).text
    row = await Users(console.state.pool).get(await _id_of(console, "new@acme.example"))
    assert row is not None and row.partner_id == "acme" and row.role is Role.MARKETER


@pytest.mark.parametrize(
    ("email", "role", "field", "words"),
    [
        (OTHER_PARTNERS_USER, "viewer", "email", "exists already"),  # any partner's: emails are unique
        ("not-an-email", "viewer", "email", "Enter an email address"),
        ("x@acme.example", "ops", "role", "Choose one of the roles listed"),  # an operator is no partner's
    ],
)
async def test_a_refused_invitation_says_why_beside_the_field(
    console: FastAPI, browser: Browser, email: str, role: str, field: str, words: str
) -> None:
    admin = await _signed_in_as(browser, ADMIN)

    answer = await _post(admin, "/settings/users", email=email, role=role)

    assert answer.status_code == 422
    assert re.search(rf'id="{field}-error" role="alert">[^<]*{words}', answer.text), answer.text
    other = await Users(console.state.pool).get(await _id_of(console, OTHER_PARTNERS_USER))
    assert other is not None and other.partner_id == "other", "another partner's user is untouched"


async def test_another_partners_user_is_not_found(console: FastAPI, browser: Browser) -> None:
    admin = await _signed_in_as(browser, ADMIN)
    other = await _id_of(console, OTHER_PARTNERS_USER)

    for action in ("disable", "enable"):
        assert (await _post(admin, f"/settings/users/{other}/{action}")).status_code == 404
    assert (await _post(admin, f"/settings/users/{other}/role", role="viewer")).status_code == 404
    assert OTHER_PARTNERS_USER not in (await admin.get("/settings/users")).text
    assert await _signed_in(await _signed_in_as(browser, OTHER_PARTNERS_USER))


@pytest.mark.parametrize("email", [MARKETER, VIEWER])
async def test_only_an_admin_sees_the_users_and_api_clients_pages(browser: Browser, email: str) -> None:
    client = await _signed_in_as(browser, email)

    for path in ("/settings/users", "/settings/api-clients", "/settings/api-clients/new"):
        assert (await client.get(path)).status_code == 403, path
    assert (await _post(client, "/settings/users", email="x@acme.example", role="admin")).status_code == 403
    page = (await client.get("/account")).text
    assert 'href="/settings/users"' not in page and 'href="/settings/api-clients"' not in page
    admin_page = (await (await _signed_in_as(browser, ADMIN)).get("/account")).text
    assert 'href="/settings/users"' in admin_page and 'href="/settings/api-clients"' in admin_page
