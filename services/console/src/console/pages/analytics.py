"""Analytics: counts per status flagged for analytics, time in status, and the segment "customers whose orders
entered status X between dates", exportable as CSV. Statuses not flagged for analytics never appear here."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter
from fastapi.responses import Response, StreamingResponse

from console.backends import BackendProblem, PartnerApi, Service
from console.catalog import STATUS_TYPES, display_order
from console.pages.orders import statuses_by_code
from console.web import N_, Page, PartnerUser

router = APIRouter(prefix="/analytics")

SEGMENT_PAGE = 50
CSV_PAGE = 1000
CSV_COLUMNS = ("customer_id", "name", "phone", "sms_consent", "orders", "last_entered_at")


# The dates a period may span: wide enough for any real order, narrow enough that a date and its next midnight are
# instants every service can hold in any time zone (9999-12-31 has no next midnight; 0001-01-01 in Moscow is 0000 in
# UTC).
EARLIEST = date(1970, 1, 1)
LATEST = date(2999, 12, 31)
NOT_A_DATE = N_("Enter a date as YYYY-MM-DD.")
OUT_OF_RANGE = N_("Choose a date between %(earliest)s and %(latest)s.")
START_AFTER_END = N_("The start is after the end.")


@dataclass(frozen=True)
class Window:
    """The period the user picked, as instants in their time zone (`end` inclusive: up to the next midnight), and
    what is wrong with the dates typed, by field (a date refused counts as not given)."""

    start_at: str | None
    end_at: str | None
    errors: dict[str, str]


def _window(page: Page, start: str, end: str) -> Window:
    zone = ZoneInfo(page.fmt.time_zone)
    errors: dict[str, str] = {}

    def day(name: str, typed: str) -> date | None:
        if not typed:
            return None
        try:
            chosen = date.fromisoformat(typed)
        except ValueError:
            errors[name] = page.gettext(NOT_A_DATE)
            return None
        if not EARLIEST <= chosen <= LATEST:
            bounds = {"earliest": page.fmt.day(EARLIEST), "latest": page.fmt.day(LATEST)}
            errors[name] = page.gettext(OUT_OF_RANGE, **bounds)
            return None
        return chosen

    first, last = day("start", start), day("end", end)
    if first and last and first > last:
        errors["end"] = page.gettext(START_AFTER_END)

    def midnight(chosen: date | None, plus: int = 0) -> str | None:
        return None if chosen is None else datetime.combine(chosen + timedelta(days=plus), time(), zone).isoformat()

    return Window(midnight(first), midnight(last, 1), errors)


def _flagged(statuses: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    chosen = (s for s in statuses.values() if s["include_in_analytics"] and not s["archived"])
    return sorted(chosen, key=display_order)


@router.get("")
async def analytics(
    page: PartnerUser, start: str = "", end: str = "", status: str = "", cursor: str | None = None
) -> Response:
    window = _window(page, start, end)
    start_at, end_at = window.start_at, window.end_at
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
    segment, errors = None, dict(window.errors)
    if status and not errors:
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
        422 if window.errors else 200,
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
    window = _window(page, start, end)
    if window.errors:
        return page.render("error.html", 422, reason="refused", status=422, detail=" ".join(window.errors.values()))
    start_at, end_at = window.start_at, window.end_at
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
