"""Settings > Order statuses in a real browser: the Status property dialog with the seed's statuses, field errors,
a stale ETag, archive blocked by a campaign, reordering, roles, another partner, the Russian interface."""

from __future__ import annotations

import re

from playwright.async_api import Page, expect

from console.domain import Role
from devtools.scenario import ANALYTICS, EXAMPLE_STATUSES

from .conftest import Console, SignIn, screenshot

TYPE_LABELS = {"general": "General", "delivery": "Delivery", "payment": "Payment"}


async def add_status(page: Page, status_type: str, code: str, name: str, english: str, analytics: bool) -> None:
    await page.wait_for_load_state("load")  # the button is htmx's once the page's deferred scripts have run
    await page.get_by_role("button", name="Add status").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_label("Name", exact=True).fill(name)
    await dialog.get_by_label(TYPE_LABELS[status_type], exact=True).check()
    await dialog.get_by_label("Status code").fill(code)
    if analytics:
        await dialog.get_by_label("Include in analytics").check()
    await dialog.get_by_text("More properties").click()
    await dialog.get_by_label("Name in English").fill(english)
    await dialog.get_by_role("button", name="Add", exact=True).click()
    await expect(page.get_by_role("dialog")).to_have_count(0)
    await expect(page.locator(f'tr[data-code="{code}"]')).to_be_visible()
    await page.wait_for_load_state("load")  # the list came with a full page load (HX-Redirect): its htmx, too


async def test_the_seed_statuses_through_the_add_status_dialog(console: Console, sign_in: SignIn) -> None:
    page = await sign_in(await console.user("marketer@shop.example", Role.MARKETER, "shop"))
    await expect(page.get_by_role("heading", name="Order statuses")).to_be_visible()
    for status_type, code, name_ru, name_en in EXAMPLE_STATUSES:
        await add_status(page, status_type, code, name_ru, name_en, code in ANALYTICS)

    # grouped by type, in position order, names in the user's language (English: the localized name)
    delivery = page.locator('table[data-type="delivery"] tbody tr')
    await expect(delivery).to_have_count(4)
    await expect(delivery.first).to_contain_text("At pickup point")
    await expect(page.locator('tr[data-code="paid"]')).to_contain_text("✓")
    await screenshot(page, "statuses")

    # the dialog's "Allowed next statuses" follow the chosen type; "Include in analytics" says what it feeds
    await page.get_by_role("button", name="Add status").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog.locator("#analytics-hint")).to_contain_text("Segment builder")
    await dialog.get_by_text("More properties").click()
    allowed = dialog.get_by_role("group", name="Allowed next statuses")
    await expect(allowed.get_by_label("Accepted")).to_be_visible()
    await dialog.get_by_label("Payment", exact=True).check()
    await expect(allowed.get_by_label("Paid")).to_be_visible()
    await expect(allowed.get_by_label("Accepted")).to_be_hidden()
    await dialog.get_by_label("Name", exact=True).fill("Возвращён")
    await dialog.get_by_label("Status code").fill("refunded")
    await allowed.get_by_label("Only those ticked").check()
    await allowed.get_by_label("Paid").check()
    await dialog.get_by_role("button", name="Add", exact=True).click()
    await expect(page.get_by_role("dialog")).to_have_count(0)
    await page.wait_for_load_state("load")  # the HX-Redirect's page, before its Add status button is clicked
    async with console.platform.client("status-registry", "shop") as registry:
        refunded = (await registry.get("/v1/statuses/refunded")).json()
    assert (refunded["type"], refunded["allowed_next"]) == ("payment", ["paid"])

    # a duplicate code: the registry's refusal beside the code field, the dialog stays open with what was typed
    await page.get_by_role("button", name="Add status").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_label("Name", exact=True).fill("Оплачен ещё раз")
    await dialog.get_by_label("Status code").fill("paid")
    await dialog.get_by_role("button", name="Add", exact=True).click()
    await expect(dialog.locator("#code-error")).to_contain_text("exists already")
    await expect(dialog.get_by_label("Status code")).to_have_attribute("aria-invalid", "true")
    await expect(dialog.get_by_label("Name", exact=True)).to_have_value("Оплачен ещё раз")
    # a bad slug: the validation error beside the field too
    await dialog.get_by_label("Status code").fill("Bad Code!")
    await dialog.get_by_role("button", name="Add", exact=True).click()
    await expect(dialog.locator("#code-error")).to_be_visible()
    await screenshot(page, "status-dialog-error")
    await dialog.get_by_role("button", name="Cancel").click()

    # reorder: "Agreed" one up puts it first among the general statuses
    await page.get_by_role("button", name="Move “Agreed” up").click()
    await expect(page.locator('table[data-type="general"] tbody tr').first).to_have_attribute("data-code", "agreed")

    # the Russian interface: Russian labels, and the statuses' Russian names
    await page.get_by_role("button", name="RU").click()
    await expect(page.get_by_role("heading", name="Статусы заказов")).to_be_visible()
    await expect(page.get_by_role("button", name="Добавить статус")).to_be_visible()
    await expect(page.locator('tr[data-code="paid"]')).to_contain_text("Оплачен")
    await screenshot(page, "statuses-ru")


async def test_a_stale_etag_and_a_status_an_active_campaign_uses(console: Console, sign_in: SignIn) -> None:
    page = await sign_in(await console.user("m@shop.example", Role.MARKETER, "shop"))
    await add_status(page, "delivery", "shipped", "Отгружен", "Shipped", analytics=False)

    # someone else renames it while the dialog is open: saving shows "changed by someone else"
    await page.get_by_role("button", name="Edit “Shipped”").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog.get_by_label("Status code")).to_have_value("shipped")
    async with console.platform.client("status-registry", "shop") as registry:
        current = await registry.get("/v1/statuses/shipped")
        renamed = await registry.patch(
            "/v1/statuses/shipped", json={"name": "Отправлен"}, headers={"If-Match": current.headers["etag"]}
        )
        assert renamed.status_code == 200, renamed.text
    await dialog.get_by_label("Name", exact=True).fill("Отгружен!")
    await dialog.get_by_role("button", name="Save").click()
    await expect(dialog.locator("#form-error")).to_contain_text("changed by someone else")

    # an active campaign names it: archiving shows which campaign blocks it
    async with console.platform.client("campaigns", "shop") as campaigns:
        body = {
            "name": "Shipped SMS",
            "trigger": {"status_type": "delivery", "from": "any", "to": "shipped"},
            "template": "Your order {{ order.id }} is on its way",
            "sender": "Shop",
        }
        created = await campaigns.post("/v1/campaigns", json=body)
        assert created.status_code == 201, created.text
        campaign_id = created.json()["id"]
        assert (await campaigns.post(f"/v1/campaigns/{campaign_id}/activate")).status_code == 200
    await page.goto("/settings/statuses")
    await page.get_by_role("button", name="Archive “Shipped”").click()
    await expect(page.get_by_role("alert").filter(has_text="Shipped SMS")).to_be_visible()
    await expect(page.get_by_role("link", name="Shipped SMS")).to_have_attribute("href", f"/campaigns/{campaign_id}")


async def test_roles_and_partners_see_only_what_is_theirs(console: Console, sign_in: SignIn) -> None:
    marketer = await sign_in(await console.user("m@shop.example", Role.MARKETER, "shop"))
    await add_status(marketer, "payment", "paid", "Оплачен", "Paid", analytics=True)

    # a viewer of the same partner reads, and cannot change
    viewer = await sign_in(await console.user("v@shop.example", Role.VIEWER, "shop"))
    await viewer.goto("/settings/statuses")
    await expect(viewer.locator('tr[data-code="paid"]')).to_be_visible()
    await expect(viewer.get_by_role("button", name="Add status")).to_have_count(0)
    await viewer.goto("/settings/statuses/paid/edit")
    await expect(viewer.get_by_role("heading", name="Not for your role")).to_be_visible()

    # another partner's marketer sees none of it, even by editing the URL or a form
    other = await sign_in(await console.user("m@other.example", Role.MARKETER, "other"))
    await other.goto("/settings/statuses")
    await expect(other.locator('tr[data-code="paid"]')).to_have_count(0)
    response = await other.goto("/settings/statuses/paid/edit")
    assert response is not None and response.status == 404
    token = await other.locator('input[name="csrf_token"]').first.get_attribute("value")
    archive = await other.request.post(
        "/settings/statuses/paid/archive", form={"csrf_token": token or "", "version": "1"}
    )
    assert archive.status in (200, 303, 404)
    async with console.platform.client("status-registry", "shop") as registry:
        assert (await registry.get("/v1/statuses/paid")).json()["archived"] is False

    # a form without the session's CSRF token is refused
    refused = await marketer.request.post("/settings/statuses/paid/archive", form={"version": "1"})
    assert refused.status == 403
    async with console.platform.client("status-registry", "shop") as registry:
        assert (await registry.get("/v1/statuses/paid")).json()["archived"] is False

    # an operator sees the ops pages only, and no partner page
    operator = await sign_in(await console.user("ops@platform.example", Role.OPS, None))
    await expect(operator).to_have_url(re.compile(r"/ops"))
    await operator.goto("/settings/statuses")
    await expect(operator.get_by_role("heading", name="Not for your role")).to_be_visible()


async def test_a_service_that_is_down_gives_a_banner_and_the_rest_keeps_working(
    console: Console, sign_in: SignIn
) -> None:
    page = await sign_in(await console.user("m@shop.example", Role.MARKETER, "shop"))
    await add_status(page, "payment", "paid", "Оплачен", "Paid", analytics=True)
    console.platform.kill("notifier")

    response = await page.goto("/messages")
    assert response is not None and response.status == 503
    await expect(page.get_by_role("alert")).to_contain_text("The notifier service does not answer right now")
    await expect(page.get_by_role("navigation", name="Main")).to_be_visible()  # the page, not a stack trace
    await page.goto("/settings/statuses")
    await expect(page.locator('tr[data-code="paid"]')).to_be_visible()
    await page.goto("/campaigns")
    await expect(page.get_by_role("heading", name="Campaigns")).to_be_visible()
