"""Messages: the SMS sent, with delivery state, segments, text, and the campaign and order they came from; and the
opt-outs, with add and remove. All through the notifier's API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import Response

from console.backends import BackendProblem, Service, segment
from console.web import N_, Marketer, Page, PartnerUser, flash

BAD_PHONE = N_("Not a mobile phone number: type it with its country code, such as +79161234567.")
router = APIRouter(prefix="/messages")

PAGE_SIZE = 25
STATES = ("scheduled", "pending", "sending", "dispatched", "delivered", "failed", "expired")
KINDS = {"campaign": False, "test": True}  # the "Sent by" filter: the notifier's is_test


@router.get("")
async def list_messages(
    page: PartnerUser,
    state: str = "",
    order: str = "",
    phone: str = "",
    campaign: str = "",
    kind: str = "",
    cursor: str | None = None,
) -> Response:
    listing = await page.api.get(
        Service.NOTIFIER,
        "/v1/messages",
        status=state or None,
        order_id=order.strip() or None,
        phone=phone.strip() or None,
        campaign_id=campaign.strip() or None,
        is_test=KINDS.get(kind),
        cursor=cursor,
        limit=PAGE_SIZE,
    )
    campaigns = {c["id"]: c["name"] for c in await page.api.pages(Service.CAMPAIGNS, "/v1/campaigns", limit=200)}
    return page.render(
        "messages/list.html",
        messages=listing["items"],
        next_cursor=listing.get("next_cursor"),
        campaigns=campaigns,
        states=STATES,
        state=state,
        order=order,
        phone=phone,
        campaign=campaign,
        kind=kind if kind in KINDS else "",
    )


@router.get("/opt-outs")
async def opt_outs(page: PartnerUser, cursor: str | None = None) -> Response:
    return await _opt_outs_page(page, cursor, errors={}, phone="")


async def _opt_outs_page(
    page: Page, cursor: str | None, *, errors: dict[str, str], phone: str, status_code: int = 200
) -> Response:
    listing = await page.api.get(Service.NOTIFIER, "/v1/opt-outs", cursor=cursor, limit=PAGE_SIZE)
    return page.render(
        "messages/opt_outs.html",
        status_code,
        opt_outs=listing["items"],
        next_cursor=listing.get("next_cursor"),
        errors=errors,
        phone=phone,
    )


@router.post("/opt-outs")
async def add_opt_out(page: Marketer, phone: Annotated[str, Form()] = "") -> Response:
    try:
        await page.api.call(Service.NOTIFIER, "POST", f"/v1/opt-outs/{segment(phone.strip())}")
    except BackendProblem as refused:
        # the notifier's refusal names the phone library's words ("(1) The string supplied did not seem to be a
        # phone number"): the marketer gets what to type instead
        message = page.gettext(BAD_PHONE) if refused.status == 422 else refused.detail
        return await _opt_outs_page(page, None, errors={"phone": message}, phone=phone, status_code=422)
    flash(page.request, page.gettext("%(phone)s gets no SMS from you any more.", phone=phone.strip()))
    return page.redirect("/messages/opt-outs")


@router.post("/opt-outs/{phone}/remove")
async def remove_opt_out(page: Marketer, phone: str) -> Response:
    try:
        await page.api.call(Service.NOTIFIER, "DELETE", f"/v1/opt-outs/{segment(phone)}")
    except BackendProblem as refused:
        flash(page.request, refused.detail, "error")
    else:
        flash(page.request, page.gettext("%(phone)s may get SMS again.", phone=phone))
    return page.redirect("/messages/opt-outs")


@router.get("/{message_id}")
async def message_page(page: PartnerUser, message_id: str) -> Response:
    message = await page.api.get(Service.NOTIFIER, f"/v1/messages/{segment(message_id)}")
    try:
        campaign = await page.api.get(Service.CAMPAIGNS, f"/v1/campaigns/{segment(message['campaign_id'])}")
    except BackendProblem as refused:
        if refused.status != 404:
            raise
        campaign = {}  # its campaign was deleted since: the message stays, shown with the campaign's id
    return page.render("messages/message.html", message=message, campaign_name=campaign.get("name"))
