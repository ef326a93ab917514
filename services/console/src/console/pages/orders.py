"""Orders: search by order id, customer or status of any type; an order's three current statuses, its full
history (applied, stale, unchanged, with its source) and "set status" by name. All through the orders API."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form
from fastapi.responses import Response

from console.backends import BackendProblem, Service
from console.web import Marketer, Page, PartnerUser, flash

router = APIRouter(prefix="/orders")

STATUS_TYPES = ("general", "delivery", "payment")
PAGE_SIZE = 25


async def statuses_by_code(page: Page) -> dict[str, dict[str, Any]]:
    """The partner's statuses (archived ones too: old orders name them), by code."""
    items = await page.api.pages(Service.REGISTRY, "/v1/statuses", include_archived="true")
    return {s["code"]: s for s in items}


def choices(page: Page, statuses: dict[str, dict[str, Any]]) -> dict[str, list[tuple[str, str]]]:
    """Active statuses by type, in position order, as (code, name in the user's language)."""
    active = sorted((s for s in statuses.values() if not s["archived"]), key=lambda s: (s["position"], s["code"]))
    return {t: [(s["code"], page.fmt.status_name(s)) for s in active if s["type"] == t] for t in STATUS_TYPES}


@router.get("")
async def search(
    page: PartnerUser, q: str = "", customer: str = "", status: str = "", cursor: str | None = None
) -> Response:
    """`q` is an order id (straight to the order when it exists); `customer` a customer id; `status` a code."""
    if q.strip():
        try:
            await page.api.get(Service.ORDERS, f"/v1/orders/{q.strip()}")
            return page.redirect(f"/orders/{q.strip()}")
        except BackendProblem as refused:
            if refused.status != 404:
                raise
    statuses = await statuses_by_code(page)
    listing = await page.api.get(
        Service.ORDERS,
        "/v1/orders",
        customer_id=customer.strip() or None,
        code=status or None,
        cursor=cursor,
        limit=PAGE_SIZE,
    )
    return page.render(
        "orders/list.html",
        orders=listing["items"],
        next_cursor=listing.get("next_cursor"),
        q=q,
        customer=customer,
        status=status,
        choices=choices(page, statuses),
        not_found=bool(q.strip()),
        types=STATUS_TYPES,
    )


async def _order_page(page: Page, order_id: str, errors: dict[str, str], status_code: int = 200) -> Response:
    order = await page.api.get(Service.ORDERS, f"/v1/orders/{order_id}")
    statuses = await statuses_by_code(page)
    history = list(reversed(order.get("history", [])))  # newest first; the API lists them as applied
    return page.render(
        "orders/order.html",
        status_code,
        order=order,
        history=history,
        statuses=statuses,
        choices=choices(page, statuses),
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
        await page.api.call(Service.ORDERS, "POST", f"/v1/orders/{order_id}/status", json={"code": code})
    except BackendProblem as refused:
        if refused.status == 404:
            raise
        message = next(iter(page.field_errors(refused).values()), refused.detail)
        return await _order_page(page, order_id, errors={"code": message}, status_code=422)
    flash(page.request, page.gettext("Status set."))
    return page.redirect(f"/orders/{order_id}")
