"""Analytics: counts per status flagged for analytics, time in status, and the segment "customers whose orders
entered status X between dates", exportable as CSV. Statuses not flagged for analytics never appear here."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter
from fastapi.responses import Response, StreamingResponse

from console.backends import BackendProblem, PartnerApi, Service
from console.catalog import STATUS_TYPES, display_order
from console.charts import Bar, Flow, bar_chart, flow_chart
from console.pages.orders import statuses_by_code
from console.web import N_, Page, PartnerUser

router = APIRouter(prefix="/analytics")

SEGMENT_PAGE = 50
CSV_PAGE = 1000
CSV_COLUMNS = ("customer_id", "name", "phone", "sms_consent", "orders", "last_entered_at")


# The dates a period may span: wide enough for any real order, narrow enough that a date and its next midnight are
# instants every service can hold in any time zone (9999-12-31 has no next midnight; 0001-01-01 in Moscow is 0000 in
# UTC). The orders service takes the same (orders.analytics.EARLIEST_DAY, LATEST_DAY).
EARLIEST = date(1970, 1, 1)
LATEST = date(2999, 12, 31)
DEFAULT_DAYS = 30  # no dates given: the last 30 days, today included
MAX_DAYS = 366  # as the orders service's per-day reports allow (orders.analytics.MAX_PERIOD_DAYS)
NOT_A_DATE = N_("There is no such date. Enter a date as year-month-day, such as 2026-03-31.")
OUT_OF_RANGE = N_("Choose a date between %(earliest)s and %(latest)s.")
START_AFTER_END = N_("The last day is before the first day. Choose a last day on or after the first one.")
TOO_LONG = N_("The period is longer than %(days)s days. Choose a shorter one, such as a month or a quarter.")
# The charts' words: the title and summary a screen reader announces for each picture.
DAILY_TITLE = N_("Orders entering “%(status)s” per day")
DAILY_SUMMARY = N_(
    "From %(first)s to %(last)s: %(total)s in all, the most on %(busiest)s (%(most)s); days with none: %(empty)s."
)
DAILY_NONE = N_("From %(first)s to %(last)s: none.")
MOVES_TITLE = N_("Moves between statuses flagged for analytics")
MOVE_TEXT = N_("from %(came_from)s to %(went_to)s: %(count)s (%(share)s)")


@dataclass(frozen=True)
class Window:
    """The period shown: the days the user typed (or the last 30 days), as the form shows them, as instants in
    their time zone (`end_at` is the midnight after the last day) and what is wrong with it by field (a period
    refused is no period: `first` and `last` are None)."""

    start: str
    end: str
    first: date | None = None
    last: date | None = None
    start_at: str | None = None
    end_at: str | None = None
    errors: dict[str, str] = field(default_factory=dict)


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
    if errors:
        return Window(start, end, errors=errors)
    last = last or datetime.now(zone).date()
    first = first or max(last - timedelta(days=DEFAULT_DAYS - 1), EARLIEST)
    if first > last:
        return Window(start, end, errors={"end": page.gettext(START_AFTER_END)})
    if (last - first).days + 1 > MAX_DAYS:
        return Window(start, end, errors={"end": page.gettext(TOO_LONG, days=page.fmt.number(MAX_DAYS))})

    def midnight(chosen: date) -> str:
        return datetime.combine(chosen, time(), zone).isoformat()

    return Window(first.isoformat(), last.isoformat(), first, last, midnight(first), midnight(last + timedelta(1)))


def _flagged(statuses: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    chosen = (s for s in statuses.values() if s["include_in_analytics"] and not s["archived"])
    return sorted(chosen, key=display_order)


@router.get("")
async def analytics(
    page: PartnerUser, start: str = "", end: str = "", status: str = "", cursor: str | None = None
) -> Response:
    window = _window(page, start, end)
    statuses = await statuses_by_code(page)
    flagged = _flagged(statuses)
    shown: dict[str, Any] = {
        "statuses": statuses,
        "flagged": flagged,
        "start": window.start,
        "end": window.end,
        "status": status,
    }
    if window.errors:  # nothing to show for a period refused: the form says what to change
        return page.render("analytics/index.html", 422, errors=window.errors, report=None, **shown)
    period = {"first_day": window.start, "last_day": window.end, "time_zone": page.fmt.time_zone}
    instants = {"from": window.start_at, "to": window.end_at}
    counts, stays, per_day, moves = await asyncio.gather(
        asyncio.gather(
            *(page.api.get(Service.ORDERS, "/v1/analytics/status-counts", type=t, **instants) for t in STATUS_TYPES)
        ),
        asyncio.gather(
            *(page.api.get(Service.ORDERS, "/v1/analytics/time-in-status", code=s["code"]) for s in flagged)
        ),
        page.api.get(Service.ORDERS, "/v1/analytics/entries-per-day", **period),
        page.api.get(Service.ORDERS, "/v1/analytics/transitions", **period),
    )
    segment, errors = None, {}
    if status:
        try:
            segment = await page.api.get(
                Service.ORDERS, "/v1/segments/customers", status=status, cursor=cursor, limit=SEGMENT_PAGE, **instants
            )
        except BackendProblem as refused:
            if refused.status >= 500 or refused.status == 404:
                raise
            errors = {"status": next(iter(page.field_errors(refused).values()), refused.detail)}
    report = {
        "counts": dict(zip(STATUS_TYPES, counts, strict=True)),
        "stays": list(zip(flagged, stays, strict=True)),
        "daily": _daily_charts(page, statuses, per_day),
        "moves": _moves_chart(page, statuses, moves),
    }
    return page.render("analytics/index.html", errors=errors, report=report, segment=segment, **shown)


def _daily_charts(page: Page, statuses: dict[str, dict[str, Any]], report: dict[str, Any]) -> list[dict[str, Any]]:
    """For each flagged status, a bar chart of its entries per day and the same figures as table rows."""
    days = [date.fromisoformat(day) for day in report["days"]]
    labels = [page.fmt.day(day) for day in days]
    span = {"first": labels[0], "last": labels[-1]}
    charts = []
    for entry in report["statuses"]:
        status = statuses.get(entry["code"]) or entry
        name = page.fmt.status_name(status)
        bars = [
            Bar(label, count, page.fmt.number(count)) for label, count in zip(labels, entry["per_day"], strict=True)
        ]
        busiest = max(bars, key=lambda bar: bar.value)
        title = page.gettext(DAILY_TITLE, status=name)
        if entry["total"]:
            summary = page.gettext(
                DAILY_SUMMARY,
                total=page.fmt.number(entry["total"]),
                busiest=busiest.label,
                most=busiest.text,
                empty=page.fmt.number(sum(1 for bar in bars if not bar.value)),
                **span,
            )
        else:
            summary = page.gettext(DAILY_NONE, **span)
        svg = bar_chart(f"daily-{entry['code']}", title, summary, bars, page.fmt.number)
        rows = list(zip(report["days"], bars, strict=True))
        charts.append({"code": entry["code"], "status": status, "total": entry["total"], "svg": svg, "rows": rows})
    return charts


def _moves_chart(page: Page, statuses: dict[str, dict[str, Any]], report: dict[str, Any]) -> dict[str, Any]:
    """The moves between flagged statuses as one flow chart, and the same figures as table rows."""
    moves = []
    for move in report["transitions"]:
        came_from = page.fmt.status_name(statuses.get(move["from_code"]) or {"name": move["from_name"]})
        went_to = page.fmt.status_name(statuses.get(move["to_code"]) or {"name": move["to_name"]})
        count, share = page.fmt.number(move["count"]), page.fmt.percent(move["share"])
        moves.append(move | {"from": came_from, "to": went_to, "count_text": count, "share_text": share})
    flows = [
        Flow(f"{m['from']} → {m['to']}", m["count"], m["share"], f"{m['count_text']} · {m['share_text']}")
        for m in moves
    ]
    described = "; ".join(
        page.gettext(MOVE_TEXT, came_from=m["from"], went_to=m["to"], count=m["count_text"], share=m["share_text"])
        for m in moves
    )
    svg = flow_chart("moves-chart", page.gettext(MOVES_TITLE), described, flows) if moves else None
    return {"svg": svg, "rows": moves}


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
    filename = f"segment-{status}-{window.start}-{window.end}.csv"
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
