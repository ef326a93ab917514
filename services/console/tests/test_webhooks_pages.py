"""The Webhooks pages of a partner's admin, with identity and the webhooks service running for real (processes on
real Kafka and PostgreSQL, private targets refused as in production) and the console in process: only admins see
them; a refused address is said beside the URL field in the user's language (the SSRF rule included); the secret is
shown once; an edit made on a stale copy says so instead of saving (never a 500); rotation, enabling, deletion and
resend-failed's field error. And the words of an endpoint's state, without any service."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from console.app import create_app
from console.domain import Role
from console.i18n import Formats
from console.pages.webhooks import endpoint_state
from console.services import Users
from console.settings import ConsoleSettings
from console.web import gettext_of
from devtools.platform import CONSOLE, Platform, database_dsn, running
from devtools.pytest_plugin import Infrastructure

PASSWORD = "correct-horse-battery-staple"
ADMIN = "admin@acme.example"
RUSSIAN_ADMIN = "admin-ru@acme.example"
MARKETER = "marketer@acme.example"
VIEWER = "viewer@acme.example"
PUBLIC_URL = "https://93.184.215.14/hooks"  # a public address as a literal: registered without any DNS look-up


@dataclass
class Running:
    platform: Platform
    app: FastAPI

    async def signed_in(self, email: str) -> httpx.AsyncClient:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://console", timeout=30)
        form = {"email": email, "password": PASSWORD, "csrf_token": await csrf(client, "/login")}
        assert (await client.post("/login", data=form)).status_code == 303
        return client


@pytest.fixture(scope="module")
async def console(infrastructure: Infrastructure, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    workdir = tmp_path_factory.mktemp("platform")
    private_refused = {"WEBHOOKS_ALLOW_PRIVATE_TARGETS": "false"}  # production's rule: the SSRF refusals apply
    async with running(infrastructure, workdir, ("identity", "webhooks"), private_refused) as platform:
        settings = ConsoleSettings(
            database_url=database_dsn(infrastructure.postgres_dsn, platform.database(CONSOLE)),
            identity_url=platform.url("identity"),
            webhooks_url=platform.url("webhooks"),
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            users = Users(app.state.pool)
            await users.create(ADMIN, Role.ADMIN, "acme", password=PASSWORD)
            await users.create(RUSSIAN_ADMIN, Role.ADMIN, "acme", password=PASSWORD, language="ru")
            await users.create(MARKETER, Role.MARKETER, "acme", password=PASSWORD)
            await users.create(VIEWER, Role.VIEWER, "acme", password=PASSWORD)
            yield Running(platform, app)


async def csrf(client: httpx.AsyncClient, path: str = "/account") -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', (await client.get(path)).text)
    assert found, f"no CSRF token on {path}"
    return found.group(1)


async def post(client: httpx.AsyncClient, path: str, data: dict[str, str | list[str]]) -> httpx.Response:
    return await client.post(path, data={**data, "csrf_token": await csrf(client)})


def field_error(page: str, field: str) -> str:
    """The text of the error shown beside `field` (the form's `{field}-error`), or '' when there is none."""
    found = re.search(rf'id="{field}-error" role="alert">([^<]*)<', page)
    return html.unescape(found.group(1)) if found else ""


def new_endpoint(url: str = PUBLIC_URL, **more: str | list[str]) -> dict[str, str | list[str]]:
    form: dict[str, str | list[str]] = {"url": url, "event_types": ["order.status_changed"], "enabled": "true"}
    return form | {"status_type": ""} | more


async def created_endpoint(client: httpx.AsyncClient) -> str:
    answer = await post(client, "/settings/webhooks", new_endpoint())
    assert answer.status_code == 200, answer.text
    found = re.search(r'href="/settings/webhooks/(ep_[0-9a-f]+)"', answer.text)
    assert found, "the secret's page links the endpoint"
    return found.group(1)


async def version_on(client: httpx.AsyncClient, path: str) -> str:
    found = re.search(r'name="version" value="(\d+)"', (await client.get(path)).text)
    assert found, f"no version on {path}"
    return found.group(1)


async def test_only_admins_see_the_webhooks_pages_and_their_link(console: Running) -> None:
    admin = await console.signed_in(ADMIN)
    assert (await admin.get("/settings/webhooks")).status_code == 200
    assert 'href="/settings/webhooks"' in (await admin.get("/account")).text, "in the admin's navigation"
    for email in (MARKETER, VIEWER):
        other = await console.signed_in(email)
        assert 'href="/settings/webhooks"' not in (await other.get("/account")).text
        for path in ("/settings/webhooks", "/settings/webhooks/new", "/settings/webhooks/ep_1"):
            assert (await other.get(path)).status_code == 403, (email, path)
        refused = await post(other, "/settings/webhooks", new_endpoint())
        assert refused.status_code == 403


async def test_a_private_address_is_refused_beside_the_url_in_either_language(console: Running) -> None:
    for email, words in (
        (ADMIN, "leads into a private network"),
        (RUSSIAN_ADMIN, "ведёт во внутреннюю сеть"),
    ):
        admin = await console.signed_in(email)
        for url in ("http://127.0.0.1:9000/hooks", "http://169.254.169.254/latest/meta-data", "http://10.0.0.7/"):
            refused = await post(admin, "/settings/webhooks", new_endpoint(url))
            assert refused.status_code == 422, refused.text
            assert words in field_error(refused.text, "url"), (email, url)
            assert f'value="{url}"' in refused.text, "what was typed stays"
    admin = await console.signed_in(ADMIN)
    scheme = await post(admin, "/settings/webhooks", new_endpoint("ftp://shop.example/hooks"))
    assert scheme.status_code == 422 and "starting with https://" in field_error(scheme.text, "url")
    no_event = await post(admin, "/settings/webhooks", {"url": PUBLIC_URL})
    assert no_event.status_code == 422 and field_error(no_event.text, "event_types") == "Choose at least one event."


async def test_the_secret_is_shown_once_and_a_stale_edit_says_so(console: Running) -> None:
    admin = await console.signed_in(ADMIN)
    created = await post(admin, "/settings/webhooks", new_endpoint(description="Shop backend"))
    assert created.status_code == 200 and created.headers["cache-control"] == "no-store"
    secret = re.search(r'id="endpoint-secret" class="secret" readonly value="(whsec_[^"]+)"', created.text)
    assert secret and 'data-copy="#endpoint-secret"' in created.text
    endpoint_id = re.findall(r'href="/settings/webhooks/(ep_[0-9a-f]+)"', created.text)[0]
    page = await admin.get(f"/settings/webhooks/{endpoint_id}")
    assert page.status_code == 200 and secret.group(1) not in page.text, "shown once only"
    assert "Shop backend" in (await admin.get("/settings/webhooks")).text

    edit = f"/settings/webhooks/{endpoint_id}/edit"
    stale = await version_on(admin, edit)
    changed = new_endpoint(description="Shop backend, v2", status_type="delivery")
    saved = await post(admin, f"/settings/webhooks/{endpoint_id}", changed | {"version": stale})
    assert saved.status_code == 303, saved.text
    again = await post(
        admin, f"/settings/webhooks/{endpoint_id}", new_endpoint(description="mine") | {"version": stale}
    )
    assert again.status_code == 409, "someone else's change is not overwritten"
    assert "changed by someone else" in again.text and 'value="mine"' in again.text, "the form keeps what was typed"
    page = await admin.get(f"/settings/webhooks/{endpoint_id}")
    assert "Shop backend, v2" in page.text and "Delivery" in page.text

    stale_switch = await post(admin, f"/settings/webhooks/{endpoint_id}/disable", {"version": stale})
    assert stale_switch.status_code == 303
    assert "changed by someone else" in (await admin.get(f"/settings/webhooks/{endpoint_id}")).text


async def test_disable_enable_rotate_and_delete(console: Running) -> None:
    admin = await console.signed_in(ADMIN)
    endpoint_id = await created_endpoint(admin)
    path = f"/settings/webhooks/{endpoint_id}"

    await post(admin, f"{path}/disable", {"version": await version_on(admin, path)})
    page = (await admin.get(path)).text
    assert "An admin disabled it" in page and 'id="enable-endpoint"' in page
    await post(admin, f"{path}/enable", {"version": await version_on(admin, path)})
    assert "enabled again" in (await admin.get(path)).text

    rotated = await post(admin, f"{path}/rotate", {})
    assert rotated.status_code == 200 and rotated.headers["cache-control"] == "no-store"
    assert re.search(r'value="whsec_[^"]+"', rotated.text)
    assert "every call carries two signatures" in rotated.text
    assert "signs beside the new one until" in (await admin.get(path)).text

    page = (await admin.get(path)).text
    assert f'action="{path}/delete" class="inline" data-confirm="Delete the endpoint' in page, "asked first"
    deleted = await post(admin, f"{path}/delete", {})
    assert deleted.status_code == 303
    assert endpoint_id not in (await admin.get("/settings/webhooks")).text
    assert (await admin.get(path)).status_code == 404


async def test_resend_failed_needs_a_moment_and_says_so_beside_it(console: Running) -> None:
    admin = await console.signed_in(RUSSIAN_ADMIN)
    endpoint_id = await created_endpoint(admin)
    refused = await post(admin, f"/settings/webhooks/{endpoint_id}/resend-failed", {"since": "вчера"})
    assert refused.status_code == 422
    assert field_error(refused.text, "since") == "Введите дату и время, например 2026-12-01 09:00."
    resent = await post(admin, f"/settings/webhooks/{endpoint_id}/resend-failed", {"since": "2026-01-01T00:00"})
    assert resent.status_code == 303
    assert "попытки были исчерпаны: 0" in (await admin.get(f"/settings/webhooks/{endpoint_id}")).text


HOSTILE = ("\x00", "a\x00b", "9999-12-31", "0001-01-01", "x" * 100_000, "-1", "abc", '{"a": [1]}')


async def test_no_webhooks_route_answers_a_500_to_hostile_values(console: Running) -> None:
    admin = await console.signed_in(ADMIN)
    base = f"/settings/webhooks/{await created_endpoint(admin)}"
    fields = ("url", "event_types", "status_type", "description", "enabled", "version", "since")
    failures = []
    for value in HOSTILE:
        in_url = quote(value[:1000], safe="")
        for path in ("/settings/webhooks", base, f"{base}/enable", f"{base}/disable", f"{base}/resend-failed",
                     f"{base}/messages/{in_url}/resend", f"/settings/webhooks/{in_url}/rotate"):  # fmt: skip
            answer = await post(admin, path, dict.fromkeys(fields, value))
            if answer.status_code >= 500:
                failures.append(f"POST {path[:60]} {value[:10]!r}: {answer.status_code}")
        for path in (base, f"{base}/log", f"{base}/edit", f"/settings/webhooks/{in_url}"):
            answer = await admin.get(path, params={"state": value[:1000], "cursor": value[:1000]})
            if answer.status_code >= 500:
                failures.append(f"GET {path[:60]} {value[:10]!r}: {answer.status_code}")
    assert not failures, "\n".join(failures)


# --- an endpoint's state in words ----------------------------------------------------------------------------------

ENDPOINT = {
    "enabled": True,
    "disabled_reason": None,
    "disabled_cause": None,
    "disabled_at": None,
    "failing_since": None,
    "paused_until": None,
}
NOW = datetime(2026, 12, 6, 15, 0, tzinfo=UTC)


def state_in(language: str, **endpoint: object) -> tuple[str, str]:
    state = endpoint_state(ENDPOINT | endpoint, Formats(language, "UTC"), gettext_of(language), NOW)
    return state.label, state.why


def next_attempt_in(language: str, **endpoint: object) -> str:
    return endpoint_state(ENDPOINT | endpoint, Formats(language, "UTC"), gettext_of(language), NOW).next_attempt


def test_why_an_endpoint_is_disabled_in_words_of_either_language() -> None:
    gone = {
        "enabled": False,
        "disabled_reason": "the endpoint answered 410 Gone",
        "disabled_cause": "gone_410",
        "disabled_at": "2026-12-01T10:00:00Z",
    }
    assert state_in("en", **gone) == (
        "Disabled",
        "The platform disabled it on Dec 1, 2026, 10:00:00\u202fAM: the endpoint answered 410 Gone, which says it no "
        "longer exists.",
    )
    assert "ответил 410 Gone" in state_in("ru", **gone)[1]

    failing = {
        "enabled": False,
        "disabled_reason": "every delivery failed since 2026-11-26T10:00:00+00:00 (5 days)",
        "disabled_cause": "failing_5_days",
        "disabled_at": "2026-12-01T10:00:00+00:00",
        "failing_since": "2026-11-26T10:00:00+00:00",
    }
    english = state_in("en", **failing)[1]
    assert "every delivery failed from Nov 26, 2026" in english and "for 5 days" in english
    russian = state_in("ru", **failing)[1]
    assert "начиная с 26 нояб. 2026" in russian and "5 дней подряд" in russian

    assert state_in("en", enabled=False) == ("Disabled", "An admin disabled it: nothing is sent to it.")
    assert (
        state_in("en", enabled=False, disabled_cause="by_partner")[1] == "An admin disabled it: nothing is sent to it."
    )
    # The cause is the code, not the words: a reason that mentions 410 without the cause is shown as it is.
    other = {"enabled": False, "disabled_reason": "410 orders failed", "disabled_at": "2026-12-01T10:00:00Z"}
    assert state_in("en", **other)[1] == "The platform disabled it on Dec 1, 2026, 10:00:00\u202fAM: 410 orders failed."
    label, why = state_in("ru", failing_since="2026-11-30T10:00:00+00:00")
    assert label == "Сбои доставки" and "С 30 нояб. 2026" in why and "за 5 дней" in why
    assert state_in("en") == ("Enabled", "")


def test_a_paused_endpoint_says_since_when_it_fails_and_when_the_next_attempt_goes_in_either_language() -> None:
    paused = {"failing_since": "2026-12-06T14:00:00Z", "paused_until": "2026-12-06T15:01:00Z"}
    assert next_attempt_in("en", **paused) == (
        "Failing since Dec 6, 2026, 2:00:00\u202fPM; next attempt at Dec 6, 2026, 3:01:00\u202fPM."
    )
    assert next_attempt_in("ru", **paused) == (
        "Доставки не проходят с 6 дек. 2026\u202fг., 14:00:00; следующая попытка — 6 дек. 2026\u202fг., 15:01:00."
    )
    # The pause is over (the next due message goes at once) or there is none: no time to say.
    assert next_attempt_in("en", failing_since="2026-12-06T14:00:00Z", paused_until="2026-12-06T14:59:00Z") == ""
    assert next_attempt_in("en", failing_since="2026-12-06T14:00:00Z") == ""
    assert next_attempt_in("en") == ""


async def test_the_endpoint_page_shows_a_failing_endpoints_next_attempt_in_either_language(console: Running) -> None:
    admin = await console.signed_in(ADMIN)
    endpoint_id = await created_endpoint(admin)
    path = f"/settings/webhooks/{endpoint_id}"
    line = re.compile(r'id="endpoint-next-attempt">([^<]*)<')
    assert not line.search((await admin.get(path)).text), "a healthy endpoint has no next attempt to say"

    # As the webhooks service leaves an endpoint after a failed attempt (its own tests make it fail for real).
    now = datetime.now(UTC)
    dsn = database_dsn(console.platform.infrastructure.postgres_dsn, console.platform.database("webhooks"))
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "UPDATE endpoints SET failing_since = $2, paused_until = $3 WHERE id = $1",
            endpoint_id,
            now - timedelta(hours=1),
            now + timedelta(minutes=1),
        )
    finally:
        await conn.close()

    english = line.search((await admin.get(path)).text)
    assert english and re.fullmatch(r"Failing since .+; next attempt at .+\.", html.unescape(english.group(1)))
    russian_admin = await console.signed_in(RUSSIAN_ADMIN)
    russian = line.search((await russian_admin.get(path)).text)
    assert russian and re.fullmatch(
        r"Доставки не проходят с .+; следующая попытка — .+\.", html.unescape(russian.group(1))
    )
