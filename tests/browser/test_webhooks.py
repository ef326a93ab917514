"""The Webhooks pages in a real browser, in English and in Russian, on the real platform with a real receiver
(`devtools.webhook_receiver`, checking every signature with the `standardwebhooks` verifier): an admin creates an
endpoint (a URL the platform refuses is said beside the field first), copies its secret, sets an order's status in
the console and sees the delivery arrive at the receiver and in the delivery log with its attempt; the receiver
answers 410 Gone to a resend, the endpoint is disabled and the page says why; enabled again, "resend failed" sends
the message again under its webhook-id; then the endpoint is deleted after a confirmation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from playwright.async_api import Dialog, Page, expect

from console.domain import Role
from devtools.platform import CONSOLE, SERVICES, Platform
from devtools.pytest_plugin import Infrastructure
from devtools.scenario import example_status_list
from devtools.upstream import Upstream
from devtools.webhook_receiver import Delivery, Receiver

from .conftest import WAIT_MS, Console, SignIn, reload_until_visible, screenshot

PARTNER = "shop"

# What each language says, where the test reads words.
WORDS = {
    "en": {
        "bad_url": "starting with https://",
        "paid": "Paid",
        "delivered": "Delivered",
        "given_up": "Given up",
        "gone": "answered 410 Gone",
        "enabled": "Enabled",
        "resent": "Messages given up on, sent again now: 1.",
        "deleted": "The endpoint is deleted",
    },
    "ru": {
        "bad_url": "начиная с https://",
        "paid": "Оплачен",
        "delivered": "Доставлено",
        "given_up": "Попытки исчерпаны",
        "gone": "ответил 410 Gone",
        "enabled": "Включён",
        "resent": "Снова отправлено сообщений, по которым попытки были исчерпаны: 1.",
        "deleted": "Эндпоинт удалён",
    },
}


@pytest.fixture
async def console(infrastructure: Infrastructure, tmp_path: Path) -> AsyncIterator[Console]:
    """conftest's platform, with the console calling the webhooks service (WEBHOOKS_URL): devtools.platform's
    CONSOLE_BACKENDS does not name it yet."""
    platform = Platform(infrastructure, tmp_path, preloaded=True)
    platform.extra_env["WEBHOOKS_URL"] = platform.url("webhooks")
    await platform.create()
    try:
        for service in (*SERVICES, CONSOLE):
            platform.start(service)
        await platform.wait_ready(*SERVICES, CONSOLE)
        yield Console(platform)
    finally:
        platform.stop_all()
        await platform.drop()


async def arrived(receiver: Receiver, what: str, *, status: int | None = None, count: int = 1) -> list[Delivery]:
    """The verified deliveries of a paid status change (answered `status`), once there are `count` of them."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while time.monotonic() < deadline:
        found = [
            d
            for d in receiver.deliveries(answered_with=status)
            if d.payload["type"] == "order.status_changed" and d.payload["data"]["to_status"]["code"] == "paid"
        ]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.2)
    got = [(request.headers.get("webhook-id"), request.status) for request in receiver.requests()]
    raise AssertionError(f"{what}; the receiver got (webhook-id, answer): {got}")


@pytest.mark.parametrize("language", ["en", "ru"])
async def test_webhooks_in_the_browser(
    console: Console, sign_in: SignIn, producer: AIOKafkaProducer, language: str
) -> None:
    words = WORDS[language]
    async with console.platform.client("status-registry", PARTNER) as registry:
        assert (await registry.put("/v1/statuses", json={"statuses": example_status_list()})).status_code == 200
    page = await sign_in(await console.user(f"admin-{language}@shop.example", Role.ADMIN, PARTNER, language=language))
    with Receiver() as receiver:
        await create_endpoint(page, receiver, words)
        await Upstream(producer, console.platform, PARTNER).order("o-1", "Анна", "invoice_issued")
        await set_paid_in_the_console(page, words)
        first = (await arrived(receiver, "the paid change never reached the receiver", status=204))[0]

        await page.goto("/settings/webhooks")
        await page.locator("#endpoints a").first.click()
        message = page.locator(f'article[data-message="{first.webhook_id}"]')
        await reload_until_visible(page, message.locator(".status-code"), "the delivery's attempt")
        await expect(message).to_contain_text(words["delivered"])
        await expect(message.locator(".attempt .status-code")).to_have_text("204")
        await expect(message.locator(".attempt").first).to_contain_text(" ms" if language == "en" else " мс")
        await screenshot(page, f"webhooks-log-{language}")

        # The receiver says it is gone: the resend fails, the message is given up and the endpoint disabled.
        receiver.status = 410
        await message.get_by_role("button").click()
        await arrived(receiver, "the resend never came", status=410)
        await reload_until_visible(page, page.locator("#endpoint-why"), "why the endpoint is disabled")
        await expect(page.locator("#endpoint-why")).to_contain_text(words["gone"])
        async with page.expect_response(lambda answer: "/log?" in answer.url, timeout=WAIT_MS) as filtered:
            await page.locator("#log-state").select_option("failed")  # the delivery log filtered in place (htmx)
        assert (await filtered.value).status == 200
        await expect(page.locator("#delivery-log article")).to_have_count(1, timeout=WAIT_MS)
        await expect(page.locator("#delivery-log article")).to_contain_text(words["given_up"])
        await expect(message.locator(".attempt .status-code")).to_have_text(["204", "410"])

        receiver.status = 204
        await page.locator("#enable-endpoint").click()
        await expect(page.locator("h1 mark")).to_have_text(words["enabled"])
        await page.locator("#resend-failed button").click()
        await expect(page.get_by_text(words["resent"])).to_be_visible()
        again = await arrived(receiver, "resend-failed sent nothing", status=204, count=2)
        assert {d.webhook_id for d in again} == {first.webhook_id}, "the same webhook-id on every send"
        await reload_until_visible(page, message.locator(".attempt:nth-child(3)"), "the third attempt")
        await expect(message.locator(".attempt .status-code")).to_have_text(["204", "410", "204"])

        page.once("dialog", accept)
        await page.locator("form[action$='/delete'] button").click()
        await expect(page.get_by_text(words["deleted"])).to_be_visible()
        await expect(page.locator("#endpoints tr[data-endpoint]")).to_have_count(0)


async def accept(dialog: Dialog) -> None:
    await dialog.accept()


async def create_endpoint(page: Page, receiver: Receiver, words: dict[str, str]) -> None:
    await page.goto("/settings/webhooks")
    await page.locator("#new-endpoint").click()
    url = page.locator("#endpoint-url")
    await url.fill("ftp://shop.example/hooks")  # a URL the platform refuses whatever its SSRF setting
    await page.locator("#endpoint-form button[type=submit]").click()
    await expect(page.locator("#url-error")).to_contain_text(words["bad_url"])
    await expect(url).to_have_attribute("aria-invalid", "true")

    await url.fill(receiver.url)
    await page.locator("#endpoint-description").fill("Shop backend")
    await page.locator("#endpoint-form button[type=submit]").click()
    await expect(page.locator("#secret-warning")).to_be_visible()
    secret = await page.locator("#endpoint-secret").input_value()
    assert secret.startswith("whsec_")
    receiver.secrets.append(secret)
    await screenshot(page, "webhooks-secret")
    await page.locator("article a[role=button]").click()
    await expect(page.locator("h1")).to_contain_text(receiver.url)


async def set_paid_in_the_console(page: Page, words: dict[str, str]) -> None:
    await page.goto("/orders/o-1")
    await reload_until_visible(page, page.locator("#set-status"), "order o-1")
    await page.locator("#set-status").select_option(label=words["paid"])
    await page.locator("#set-status").locator("xpath=ancestor::form").locator("button[type=submit]").click()
    await expect(page.locator('dd[data-type="payment"]')).to_contain_text(words["paid"])
