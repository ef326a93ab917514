"""Analytics: counts per status flagged for analytics, time in status, and the segment "customers whose orders
entered status X between dates", exportable as CSV. Statuses not flagged for analytics never appear here."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter
from fastapi.responses import Response, StreamingResponse

from console.backends import BackendProblem, PartnerApi, Service
from console.catalog import STATUS_TYPES, display_order
from console.pages.orders import statuses_by_code
from console.web import Page, PartnerUser

router = APIRouter(prefix="/analytics")

SEGMENT_PAGE = 50
CSV_PAGE = 1000
CSV_COLUMNS = ("customer_id", "name", "phone", "sms_consent", "orders", "last_entered_at")


def _window(page: Page, start: str, end: str) -> tuple[str | None, str | None]:
    """The dates the user picked, as instants in their time zone (`end` inclusive: up to the next midnight)."""
    zone = ZoneInfo(page.fmt.time_zone)

    def midnight(day: str, plus: int = 0) -> str | None:
        if not day:
            return None
        return datetime.combine(date.fromisoformat(day) + timedelta(days=plus), time(), zone).isoformat()

    return midnight(start), midnight(end, 1)


def _flagged(statuses: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    chosen = (s for s in statuses.values() if s["include_in_analytics"] and not s["archived"])
    return sorted(chosen, key=display_order)


@router.get("")
async def analytics(
    page: PartnerUser, start: str = "", end: str = "", status: str = "", cursor: str | None = None
) -> Response:
    start_at, end_at = _window(page, start, end)
    statuses = await statuses_by_code(page)
    flagged = _flagged(statuses)
    counts = await asyncio.gather(
        *(
            page.api.get(Service.ORDERS, "/v1/analytics/status-counts", type=t, **{"from": start_at, "to": end_at})
            for t in STATUS_TYPES
        )
    )
    stays = await asyncio.gather(
        *(page.api.get(Service.ORDERS, "/v1/analytics/time-in-status", code=s["code"]) for s in flagged)
    )
    segment, errors = None, {}
    if status:
        try:
            segment = await page.api.get(
                Service.ORDERS,
                "/v1/segments/customers",
                status=status,
                cursor=cursor,
                limit=SEGMENT_PAGE,
                **{"from": start_at, "to": end_at},
            )
        except BackendProblem as refused:
            if refused.status >= 500 or refused.status == 404:
                raise
            errors = {"status": next(iter(page.field_errors(refused).values()), refused.detail)}
    return page.render(
        "analytics/index.html",
        counts=dict(zip(STATUS_TYPES, counts, strict=True)),
        stays=list(zip(flagged, stays, strict=True)),
        flagged=flagged,
        statuses=statuses,
        segment=segment,
        errors=errors,
        start=start,
        end=end,
        status=status,
    )


@router.get("/segment.csv")
async def segment_csv(page: PartnerUser, status: str, start: str = "", end: str = "") -> Response:
    """Every customer of the segment as CSV, read page by page from the API as it is written out."""
    start_at, end_at = _window(page, start, end)
    api = page.api
    first = await api.get(
        Service.ORDERS, "/v1/segments/customers", status=status, limit=1, **{"from": start_at, "to": end_at}
    )
    del first  # a refusal (e.g. a status not flagged for analytics) answers before any byte of the file
    filename = f"segment-{status}-{start or 'all'}-{end or 'now'}.csv"
    return StreamingResponse(
        _rows(api, status, start_at, end_at),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


async def _rows(api: PartnerApi, status: str, start_at: str | None, end_at: str | None) -> AsyncIterator[str]:
    yield _line(CSV_COLUMNS)
    cursor = None
    while True:
        window = {"from": start_at, "to": end_at}
        answer = await api.get(
            Service.ORDERS, "/v1/segments/customers", status=status, cursor=cursor, limit=CSV_PAGE, **window
        )
        for item in answer["items"]:
            yield _line(tuple(item.get(column, "") for column in CSV_COLUMNS))
        cursor = answer.get("next_cursor")
        if not cursor:
            return


def _line(values: tuple[Any, ...]) -> str:
    out = io.StringIO()
    csv.writer(out).writerow(values)
    return out.getvalue()
