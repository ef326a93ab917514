"""A partner's admin in a real browser, in English and in Russian: invites a user (the one-time password shown
once, replaced at the first sign-in), changes their role, disables them (their open session ends at once); creates
an API client, sees its secret once, gets a token with it from identity's token endpoint and reads the registry's
statuses with that token; rotates the secret (the previous one still works), revokes the client (its secret gets
no token and its token is refused) and reads the client's history."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from playwright.async_api import Browser, Dialog, Page, expect

from console.domain import Role

from .conftest import Console, SignIn

ADMIN = "admin@acme.example"
INVITED = "anna@acme.example"
NEW_PASSWORD = "violet-harbour-lantern-91"
WORDS: dict[str, dict[str, str]] = {
    "en": {
        "users": "Users",
        "invite": "Invite",
        "once": "it is shown only this once",
        "role_changed": "role is changed",
        "change_role": "Change role",
        "disable": "Disable",
        "disabled": "Disabled",
        "clients": "API clients",
        "new_client": "New API client",
        "create": "Create API client",
        "copy": "Copy",
        "copied": "Copied",
        "done": "Done",
        "rotate": "Rotate secret",
        "keeps_working": "The previous secret keeps working until",
        "revoke": "Revoke",
        "revoked": "is revoked",
    },
    "ru": {
        "users": "Пользователи",
        "invite": "Пригласить",
        "once": "он показывается только один раз",
        "role_changed": "изменена",
        "change_role": "Изменить роль",
        "disable": "Отключить",
        "disabled": "Отключён",
        "clients": "API-клиенты",
        "new_client": "Новый API-клиент",
        "create": "Создать API-клиента",
        "copy": "Копировать",
        "copied": "Скопировано",
        "done": "Готово",
        "rotate": "Заменить секрет",
        "keeps_working": "Прежний секрет работает до",
        "revoke": "Отозвать",
        "revoked": "отозван",
    },
}

HISTORY = {
    "en": ("created the client", "rotated the secret", "revoked the client"),
    "ru": ("создал(а) клиента", "заменил(а) секрет", "отозвал(а) клиента"),
}


def _accept_confirmations(page: Page) -> None:
    """The disable and revoke buttons ask first (console.js: data-confirm): yes."""

    async def accept(dialog: Dialog) -> None:
        await dialog.accept()

    page.on("dialog", accept)


async def _sign_in_first_time(browser: Browser, console: Console, email: str, one_time: str) -> Page:
    """The invited user signs in with the one-time password and must choose their own before anything else."""
    context = await browser.new_context(base_url=console.url)
    page = await context.new_page()
    await page.goto("/login")
    await page.locator("#email").fill(email)
    await page.locator("#password").fill(one_time)
    await page.locator("#password").press("Enter")
    await expect(page).to_have_url(re.compile(r"/account/password$"))
    await page.locator("#current").fill(one_time)
    await page.locator("#new").fill(NEW_PASSWORD)
    await page.locator("#repeat").fill(NEW_PASSWORD)
    await page.locator("#repeat").press("Enter")
    await expect(page).to_have_url(re.compile(r"/settings/statuses$"))
    await page.wait_for_load_state("load")  # a form post's page: its htmx works once its deferred scripts ran
    return page


async def _token(console: Console, client_id: str, secret: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=console.platform.url("identity"), timeout=10) as identity:
        return await identity.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret))


async def _statuses(console: Console, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=console.platform.url("status-registry"), timeout=10) as registry:
        return await registry.get("/v1/statuses", headers={"Authorization": f"Bearer {token}"})


@pytest.mark.parametrize("language", ["en", "ru"])
async def test_an_admin_manages_the_partners_users_and_api_clients(
    browser: Browser, console: Console, sign_in: SignIn, language: str
) -> None:
    words = WORDS[language]
    await console.user(ADMIN, Role.ADMIN, "acme", language=language)
    admin = await sign_in(ADMIN)
    await admin.context.grant_permissions(["clipboard-read", "clipboard-write"])
    _accept_confirmations(admin)

    # Users: invite, with the one-time password shown once.
    await admin.get_by_role("link", name=words["users"], exact=True).click()
    await admin.locator("#invite-email").fill(INVITED)
    await admin.locator("#invite-role").select_option("viewer")
    await admin.get_by_role("button", name=words["invite"], exact=True).click()
    await expect(admin.get_by_role("alert")).to_contain_text(words["once"])
    one_time = await admin.locator("#one-time-password").input_value()
    assert re.fullmatch(r"[A-Za-z0-9]{16}", one_time)
    invited = await _sign_in_first_time(browser, console, INVITED, one_time)

    # A role changed, beside its row.
    await admin.goto("/settings/users")
    row = admin.locator(f'tr[data-email="{INVITED}"]')
    await row.get_by_role("combobox").select_option("marketer")
    await row.get_by_role("button", name=words["change_role"]).click()
    await expect(admin.locator(".flash")).to_contain_text(words["role_changed"])
    await expect(row.get_by_role("combobox")).to_have_value("marketer")

    # Disabled: their open session ends at once.
    await row.get_by_role("button", name=words["disable"]).click()
    await expect(row).to_contain_text(words["disabled"])
    await invited.reload()
    await expect(invited).to_have_url(re.compile(r"/login"))
    await expect(admin.locator("#user-changes tbody tr")).to_have_count(3)  # invited, role changed, disabled

    # An API client: the secret shown once, and it works.
    await admin.get_by_role("link", name=words["clients"], exact=True).click()
    await admin.get_by_role("button", name=words["new_client"]).click()
    await admin.locator("#client-name").fill("Shop backend")
    await admin.locator('input[value="statuses:read"]').check()
    await admin.get_by_role("button", name=words["create"]).click()
    await expect(admin.locator("#secret-warning")).to_contain_text(words["once"])
    await admin.wait_for_load_state("load")  # a form post's page: Copy works once its deferred script has run
    client_id = await admin.locator("#client-id").input_value()
    secret = await admin.locator("#client-secret").input_value()
    assert secret.startswith("cs_")
    await admin.get_by_role("button", name=words["copy"]).click()
    await expect(admin.get_by_role("button", name=words["copied"])).to_be_visible()
    assert await admin.evaluate("navigator.clipboard.readText()") == secret

    issued = await _token(console, client_id, secret)
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]
    assert (await _statuses(console, token)).status_code == 200

    await admin.get_by_role("button", name=words["done"]).click()
    await expect(admin).to_have_url(re.compile(rf"/settings/api-clients/{client_id}$"))
    assert secret not in await admin.content(), "shown once only"
    await admin.goto("/settings/api-clients")
    await expect(admin.locator(f'tr[data-client="{client_id}"]')).to_contain_text("Shop backend")
    assert secret not in await admin.content()

    # Rotated: a new secret, once; the previous one keeps working for the grace period.
    await admin.locator(f'tr[data-client="{client_id}"] a').click()
    await admin.get_by_role("button", name=words["rotate"]).click()
    await expect(admin.locator("#previous-secret")).to_contain_text(words["keeps_working"])
    new_secret = await admin.locator("#client-secret").input_value()
    assert new_secret.startswith("cs_") and new_secret != secret
    assert (await _token(console, client_id, new_secret)).status_code == 200
    assert (await _token(console, client_id, secret)).status_code == 200, "the previous secret, in its grace period"

    # Revoked: no token for any secret, and the token issued before is refused.
    await admin.get_by_role("button", name=words["done"]).click()
    await admin.get_by_role("button", name=words["revoke"], exact=True).click()
    await expect(admin.locator(".flash")).to_contain_text(words["revoked"])
    assert (await _token(console, client_id, new_secret)).status_code == 401
    for _ in range(50):  # every service refuses a revoked client's tokens within a second
        if (await _statuses(console, token)).status_code == 401:
            break
        await asyncio.sleep(0.1)
    assert (await _statuses(console, token)).status_code == 401

    history = admin.locator("#client-audit tbody tr")
    await expect(history).to_have_count(3)
    for entry, what in zip(await history.all(), HISTORY[language], strict=True):
        await expect(entry).to_contain_text(what)
        await expect(entry).to_contain_text(ADMIN)
