"""Orders: search by order id, customer or status of any type; an order's three current statuses, its full
history (applied, stale, unchanged, with its source) and "set status" by name. All through the orders API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import Response

from console.backends import BackendProblem, Service, segment
from console.catalog import STATUS_TYPES, Status, choices, partner_statuses
from console.web import Marketer, Page, PartnerUser, flash

router = APIRouter(prefix="/orders")

PAGE_SIZE = 25


async def statuses_by_code(page: Page) -> dict[str, Status]:
    """The partner's statuses (archived ones too: old orders name them), by code."""
    return {s["code"]: s for s in await partner_statuses(page, include_archived=True)}


@router.get("")
async def search(
    page: PartnerUser, q: str = "", customer: str = "", status: str = "", cursor: str | None = None
) -> Response:
    """`q` is an order id (straight to the order when it exists); `customer` a customer id; `status` a code."""
    if q.strip():
        try:
            await page.api.get(Service.ORDERS, f"/v1/orders/{segment(q.strip())}")
            return page.redirect(f"/orders/{q.strip()}")
        except BackendProblem as refused:
            if refused.status not in (404, 422):  # 422: the service refuses it as an id (a NUL...): no such order
                raise
    statuses = await statuses_by_code(page)
    listing = await page.api.get(
        Service.ORDERS,
        "/v1/orders",
        customer_id=customer.strip() or None,
        code=status or None,
        cursor=cursor,
        limit=PAGE_SIZE,
        newest_first=True,  # what changed last is what support is asked about
    )
    return page.render(
        "orders/list.html",
        orders=listing["items"],
        next_cursor=listing.get("next_cursor"),
        q=q,
        customer=customer,
        status=status,
        choices=choices(page, statuses.values()),
        not_found=bool(q.strip()),
        types=STATUS_TYPES,
    )


async def _order_page(page: Page, order_id: str, errors: dict[str, str], status_code: int = 200) -> Response:
    order = await page.api.get(Service.ORDERS, f"/v1/orders/{segment(order_id)}")
    statuses = await statuses_by_code(page)
    history = list(reversed(order.get("history", [])))  # newest first; the API lists them as applied
    return page.render(
        "orders/order.html",
        status_code,
        order=order,
        history=history,
        statuses=statuses,
        choices=choices(page, statuses.values()),
        types=STATUS_TYPES,
        errors=errors,
    )


@router.get("/{order_id}")
async def order_page(page: PartnerUser, order_id: str) -> Response:
    return await _order_page(page, order_id, errors={})


@router.post("/{order_id}/status")
async def set_status(page: Marketer, order_id: str, code: Annotated[str, Form()] = "") -> Response:
    """Set one status by its name (the form sends its code); a refused transition shows beside the field."""
    try:
        await page.api.call(Service.ORDERS, "POST", f"/v1/orders/{segment(order_id)}/status", json={"code": code})
    except BackendProblem as refused:
        if refused.status == 404:
            raise
        message = next(iter(page.field_errors(refused).values()), refused.detail)
        return await _order_page(page, order_id, errors={"code": message}, status_code=422)
    flash(page.request, page.gettext("Status set."))
    return page.redirect(f"/orders/{order_id}")
