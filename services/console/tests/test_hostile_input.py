"""The console against hostile and unusual input, with the four services running for real (processes on real Kafka
and PostgreSQL) and the console in process on its own database: every route, driven with NUL characters, far dates,
100 KB strings and values of the wrong type, answers a page with a field error, a 404 or another refusal, never a
500; and the cases the issue found, one by one."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from console.app import create_app
from console.domain import Role
from console.services import Users
from console.settings import ConsoleSettings
from devtools.platform import CONSOLE, SERVICES, Platform, database_dsn
from devtools.pytest_plugin import Infrastructure

PASSWORD = "correct-horse-battery-staple"
MARKETER = "marketer@acme.example"
OPERATOR = "ops@platform.example"
TEMPLATES = Path(__file__).resolve().parents[1] / "src" / "console" / "templates"

HOSTILE = {
    "NUL": "\x00",
    "NUL inside": "a\x00b",
    "far future": "9999-12-31",
    "far past": "0001-01-01",
    "100 KB": "x" * 100_000,  # whole in a form; in a URL, cut to URL_LIMIT
    "negative": "-1",
    "huge number": "9" * 30,
    "not a number": "abc",
    "JSON": '{"a": [1]}',
}
# A URL longer than this never reaches the console (uvicorn refuses a request line over h11's 16 KB; httpx will not
# even send one over 64 KB), so a value in a path or a query is cut to it.
URL_LIMIT = 12_000
# Routes that take no input of their own and would end the test's own session.
SESSION_ENDING = {"/logout", "/account/sessions/end"}


@dataclass
class Running:
    platform: Platform
    app: FastAPI

    def client(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app)
        return httpx.AsyncClient(transport=transport, base_url="http://console", timeout=60)


@pytest.fixture(scope="module")
async def running(infrastructure: Infrastructure, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    platform = Platform(infrastructure, tmp_path_factory.mktemp("platform"), preloaded=True)
    await platform.create()
    try:
        for service in SERVICES:
            platform.start(service)
        await platform.wait_ready(*SERVICES)
        settings = ConsoleSettings.model_validate(
            {variable.lower(): url for variable, url in platform.console_env().items()}  # the four services' URLs
            | {
                "database_url": database_dsn(infrastructure.postgres_dsn, platform.database(CONSOLE)),
                "kafka_bootstrap_servers": infrastructure.kafka_bootstrap,
                "kafka_topic_prefix": platform.prefix,
                "sign_in_free_failures_per_address": 10_000,  # the hostile sign-ins must not hold the test's up
            }
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            users = Users(app.state.pool)
            await users.create(MARKETER, Role.MARKETER, "acme", password=PASSWORD)
            await users.create(OPERATOR, Role.OPS, password=PASSWORD)
            yield Running(platform, app)
    finally:
        platform.stop_all()
        await platform.drop()


async def _csrf(client: httpx.AsyncClient, path: str = "/account") -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', (await client.get(path)).text)
    assert found, f"no CSRF token on {path}"
    return found.group(1)


async def _sign_in(client: httpx.AsyncClient, email: str) -> None:
    form = {"email": email, "password": PASSWORD, "csrf_token": await _csrf(client, "/login")}
    assert (await client.post("/login", data=form)).status_code == 303


def _form_fields() -> set[str]:
    """Every field name any of the console's forms has (routes read some of them from the form as a whole)."""
    names = set()
    for template in TEMPLATES.rglob("*.html"):
        names |= set(re.findall(r'name="([a-z_]+)"', template.read_text()))
    return names - {"csrf_token"}


def _inputs(dependant: Dependant) -> tuple[set[str], set[str]]:
    """The names of a route's query and form parameters, its dependencies' included."""
    query, form = {p.name for p in dependant.query_params}, {p.name for p in dependant.body_params}
    for dependency in dependant.dependencies:
        more_query, more_form = _inputs(dependency)
        query, form = query | more_query, form | more_form
    return query, form


def _requests(app: FastAPI, value: str) -> list[tuple[str, str, dict[str, str]]]:
    """(method, URL, query or form) for every route of the console, each of its inputs set to `value`."""
    fields = _form_fields()
    found = []
    for context in iter_route_contexts(app.routes):  # the pages' routes too, as included with their prefixes
        route = context.original_route
        if not isinstance(route, APIRoute) or context.path is None or context.path in SESSION_ENDING:
            continue
        query, form = _inputs(route.dependant)
        in_url = value[:URL_LIMIT]
        path = re.sub(r"\{[^}]+\}", quote(in_url, safe=""), context.path)
        for method in sorted((route.methods or set()) - {"HEAD"}):
            if method == "GET":  # the whole query within the limit, however many parameters the route takes
                found.append((method, path, dict.fromkeys(query, in_url[: URL_LIMIT // max(len(query), 1)])))
            else:
                found.append((method, path, dict.fromkeys(fields | form, value)))
    return found


async def test_no_route_answers_a_500_to_hostile_values(running: Running) -> None:
    failures = []
    for email in (MARKETER, OPERATOR):
        async with running.client() as client:
            await _sign_in(client, email)
            token = await _csrf(client)
            for kind, value in HOSTILE.items():
                for method, path, inputs in _requests(running.app, value):
                    if method == "GET":
                        answer = await client.get(path, params=inputs)
                    else:
                        answer = await client.request(method, path, data=inputs | {"csrf_token": token})
                    if answer.status_code >= 500:
                        failures.append(f"{email.split('@')[0]} {method} {path[:60]} ({kind}): {answer.status_code}")
            assert (await client.get("/account")).status_code == 200, "still signed in: every answer above was real"
    assert not failures, "\n".join(failures)


@asynccontextmanager
async def _marketer(running: Running) -> AsyncIterator[httpx.AsyncClient]:
    async with running.client() as client:
        await _sign_in(client, MARKETER)
        yield client


NO_SUCH_DATE = "There is no such date. Enter a date as year-month-day, such as 2026-03-31."


@pytest.mark.parametrize(
    ("start", "end", "field", "message"),
    [
        ("", "9999-12-31", "end", "Choose a date between Jan 1, 1970 and Dec 31, 2999."),
        ("0001-01-01", "", "start", "Choose a date between Jan 1, 1970 and Dec 31, 2999."),
        ("2026-13-01", "", "start", NO_SUCH_DATE),
        ("2026-02-30", "2026-03-02", "start", NO_SUCH_DATE),
        ("2026-12-02", "2026-12-01", "end", "The last day is before the first day. Choose a last day on or after the "
         "first one."),
        ("2026-01-01", "2027-01-02", "end", "The period is longer than 366 days. Choose a shorter one, such as a month "
         "or a quarter."),
    ],
)  # fmt: skip
async def test_analytics_says_what_is_wrong_with_a_date(
    running: Running, start: str, end: str, field: str, message: str
) -> None:
    async with _marketer(running) as client:
        answer = await client.get("/analytics", params={"start": start, "end": end, "status": "paid"})
    assert answer.status_code == 422
    error = re.search(rf'id="{field}-error"[^>]*>([^<]+)<', answer.text)
    assert error and error.group(1) == message, answer.text[-3000:]
    assert "Input should be" not in answer.text


@pytest.mark.parametrize(("start", "end"), [("1970-01-01", "1971-01-01"), ("2999-01-01", "2999-12-31")])
async def test_analytics_takes_the_farthest_days_it_offers(running: Running, start: str, end: str) -> None:
    async with _marketer(running) as client:
        answer = await client.get("/analytics", params={"start": start, "end": end})
    assert answer.status_code == 200, answer.text[-2000:]


@pytest.mark.parametrize("path", ["/orders/%00", "/campaigns/%00", "/messages/%00", "/settings/statuses/%00/edit"])
async def test_a_nul_in_a_path_is_a_404(running: Running, path: str) -> None:
    async with _marketer(running) as client:
        answer = await client.get(path)
    assert answer.status_code == 404
    assert "Not found" in answer.text


async def test_a_nul_in_the_order_search_finds_nothing(running: Running) -> None:
    async with _marketer(running) as client:
        answer = await client.get("/orders", params={"q": "A-1\x00"})
    assert answer.status_code == 200


async def test_a_nul_in_an_opt_out_phone_is_a_field_error(running: Running) -> None:
    async with _marketer(running) as client:
        token = await _csrf(client, "/messages/opt-outs")
        answer = await client.post("/messages/opt-outs", data={"phone": "+7916\x001234567", "csrf_token": token})
    assert answer.status_code == 422
    assert re.search(r'id="phone-error"[^>]*>[^<]+<', answer.text), answer.text[-2000:]


async def test_a_status_that_is_not_the_partners_cannot_be_archived_or_moved(running: Running) -> None:
    """Another partner's status, and one that exists nowhere: a 404 page, not "changed by someone else"."""
    registry = running.platform.client("status-registry", "globex")
    async with registry:
        created = await registry.post("/v1/statuses", json={"code": "theirs", "type": "general", "name": "Theirs"})
        assert created.status_code == 201, created.text
    async with _marketer(running) as client:
        token = await _csrf(client, "/account")
        for code in ("theirs", "nowhere"):
            for action, form in (("archive", {"version": "1"}), ("move/up", {}), ("move/down", {}), ("restore", {})):
                answer = await client.post(f"/settings/statuses/{code}/{action}", data=form | {"csrf_token": token})
                assert answer.status_code == 404, (code, action, answer.status_code)
            edited = await client.post(
                f"/settings/statuses/{code}", data={"name": "Mine", "version": "1", "csrf_token": token}
            )
            assert edited.status_code == 404, (code, "edit", edited.status_code)
        listing = await client.get("/settings/statuses")
        assert "changed by someone else" not in listing.text
