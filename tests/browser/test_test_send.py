"""The campaign editor's "Send a test", in English and Russian: the preview's text sent to a phone the marketer types,
through the notifier and its provider, found in Messages marked as a test (badge, filter, detail); an opted-out
number refused beside the field, in the marketer's words."""

from __future__ import annotations

import json
import re

import httpx
from playwright.async_api import Page, expect

from console.domain import Role
from devtools.platform import Platform
from devtools.scenario import define_example

from .conftest import Console, SignIn, reload_until_visible, screenshot

PARTNER = "shop"
OPTED_OUT = "+79160000001"


async def opt_out(platform: Platform, phone: str) -> None:
    async with platform.client("notifier", PARTNER) as notifier:
        answer = await notifier.post(f"/v1/opt-outs/{phone}")
        assert answer.status_code == 201, answer.text


def sms_sent_to(platform: Platform, phone: str) -> list[dict[str, str]]:
    """What the notifier's console provider was given for `phone` (its outbox file: one JSON line per SMS)."""
    if not platform.sms_file.exists():
        return []
    lines = [json.loads(line) for line in platform.sms_file.read_text().splitlines() if line.strip()]
    return [line for line in lines if line.get("to") == phone]


async def use_tests_of(platform: Platform, email: str, count: int) -> None:
    """`count` test sends by the console user `email` through the notifier's API (a token naming them, as the
    console's are): they use that person's tests of the hour."""
    token = await platform.tokens.token(PARTNER, ("read", "write"), actor=email)
    async with httpx.AsyncClient(base_url=platform.url("notifier"), timeout=10) as notifier:
        for _ in range(count):
            answer = await notifier.post(
                "/v1/messages/test",
                json={"phone": "+79165550000", "text": "Test"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert answer.status_code == 201, answer.text


async def send_a_test(page: Page, campaign_id: str, phone: str, button: str, label: str) -> str:
    """Open the campaign's editor, wait for its preview's text, type `phone` and send; returns the text sent."""
    await page.goto(f"/campaigns/{campaign_id}")
    preview_text = page.get_by_test_id("preview-text")
    await expect(preview_text).to_be_visible()
    await page.get_by_label(label).fill(phone)
    await page.get_by_role("button", name=button, exact=True).click()
    return await preview_text.inner_text()


async def test_send_a_test_in_english(console: Console, sign_in: SignIn) -> None:
    campaign_id = await define_example(console.platform, PARTNER)
    await opt_out(console.platform, OPTED_OUT)
    page = await sign_in(await console.user("marketer@shop.example", Role.MARKETER, PARTNER))

    text = await send_a_test(page, campaign_id, "+7 916 555-12-34", "Send a test", "Send a test to")
    sent = page.locator("#test-sent")
    await expect(sent).to_contain_text("Test sent to +79165551234.")
    await screenshot(page, "test-send")
    # the provider got the preview's text (the console provider's outbox file)
    for _ in range(30):
        if sms_sent_to(console.platform, "+79165551234"):
            break
        await page.wait_for_timeout(500)
    assert [line["text"] for line in sms_sent_to(console.platform, "+79165551234")] == [text]

    # the phone typed stays while the preview redraws; an opted-out number is refused beside the field
    await page.get_by_label("Send a test to").fill(OPTED_OUT)
    await page.get_by_role("button", name="Send a test", exact=True).click()
    refusal = page.locator("#test-send-result [role=alert]")
    await expect(refusal).to_have_text(re.compile(r"^This number opted out of your SMS, so it gets no test either\."))
    await expect(page.get_by_label("Send a test to")).to_have_attribute("aria-describedby", "test-send-result")
    await page.get_by_label("Send a test to").fill("12345")
    await page.get_by_role("button", name="Send a test", exact=True).click()
    await expect(refusal).to_have_text(re.compile(r"^Not a mobile phone number: type it with its country code"))
    assert sms_sent_to(console.platform, OPTED_OUT) == []

    # in Messages: the badge, the filter, the detail
    await page.goto("/messages")
    test_row = page.locator("tr[data-message]").filter(has_text="+79165551234")
    await reload_until_visible(page, test_row, "the test message")
    await expect(test_row.locator("[data-test-badge]")).to_have_text("Test")
    await page.get_by_label("Sent from").select_option(label="Campaigns only")
    await page.get_by_role("button", name="Search").click()
    await expect(page.locator("tr[data-message]")).to_have_count(0)
    await page.get_by_label("Sent from").select_option(label="Tests only")
    await page.get_by_role("button", name="Search").click()
    await expect(page.locator("tr[data-message]")).to_have_count(1)
    await page.locator("tr[data-message] a").first.click()
    await expect(page.locator("h1 [data-test-badge]")).to_have_text("Test")
    await expect(page.locator("#test-note")).to_contain_text("counted in no statistics")
    await expect(page.locator("#message-text")).to_have_text(text)

    # a viewer sees the preview, not the form
    viewer = await sign_in(await console.user("viewer@shop.example", Role.VIEWER, PARTNER))
    await viewer.goto(f"/campaigns/{campaign_id}")
    await expect(viewer.get_by_test_id("preview-text")).to_be_visible()
    await expect(viewer.locator("#test-send")).to_have_count(0)


async def test_send_a_test_in_russian(console: Console, sign_in: SignIn) -> None:
    campaign_id = await define_example(console.platform, PARTNER)
    await opt_out(console.platform, OPTED_OUT)
    page = await sign_in(await console.user("marketer@shop.example", Role.MARKETER, PARTNER, language="ru"))
    await use_tests_of(console.platform, "marketer@shop.example", 9)  # the browser's test is the hour's tenth

    await send_a_test(page, campaign_id, "+79165551234", "Отправить тест", "Отправить тест на номер")
    await expect(page.locator("#test-sent")).to_contain_text("Тест отправлен на +79165551234.")
    await page.get_by_role("link", name="Посмотреть в «Сообщениях»").click()
    await expect(page.locator("h1 [data-test-badge]")).to_have_text("Тест")
    await expect(page.locator("#test-note")).to_contain_text("не учитывается в статистике")

    await page.goto("/messages")
    test_row = page.locator("tr[data-message]").filter(has_text="+79165551234")
    await reload_until_visible(page, test_row, "the test message")
    await expect(test_row.locator("[data-test-badge]")).to_have_text("Тест")
    await page.get_by_label("Источник").select_option(label="Только кампании")
    await page.get_by_role("button", name="Найти").click()
    await expect(page.locator("tr[data-message]")).to_have_count(0)

    await page.goto(f"/campaigns/{campaign_id}")
    await page.get_by_label("Отправить тест на номер").fill(OPTED_OUT)
    await page.get_by_role("button", name="Отправить тест", exact=True).click()
    await expect(page.locator("#test-send-result [role=alert]")).to_have_text(
        re.compile(r"^Этот номер отказался от ваших SMS, поэтому тест на него тоже не отправить\.")
    )
    await page.get_by_label("Отправить тест на номер").fill("12345")
    await page.get_by_role("button", name="Отправить тест", exact=True).click()
    await expect(page.locator("#test-send-result [role=alert]")).to_have_text(
        re.compile(r"^Это не номер мобильного телефона")
    )
    await screenshot(page, "test-send-ru")

    # the eleventh test of the hour: refused, saying from when the next one is possible
    await page.get_by_label("Отправить тест на номер").fill("+79165551234")
    await page.get_by_role("button", name="Отправить тест", exact=True).click()
    await expect(page.locator("#test-send-result [role=alert]")).to_have_text(
        re.compile(
            r"^За последний час вы отправили все положенные тесты \(10\)\. Следующий можно будет отправить в .+2\d"
        )
    )
