"""HTTP API of the orders service: orders and their statuses, analytics and segments; partner-scoped."""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, date, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from contracts.orders import Customer
from contracts.primitives import ONE_LINE_PATTERN, CurrencyCode, Money, RequestDatetime, Slug
from contracts.statuses import StatusCodes, StatusDefinition, StatusType
from orders import analytics
from orders.domain import DetailsOutcome, OrderDetails, Outcome, Reason, Refused, Requested
from orders.read_model import (
    DailyEntries,
    EntriesPerDay,
    OrderDetail,
    OrderFilter,
    OrderPage,
    OrderView,
    Segment,
    SegmentCustomer,
    StatusCount,
    StatusCounts,
    TimeInStatus,
    Transition,
    Transitions,
    find_orders,
    one_order,
    order_detail,
    order_page,
)
from orders.services import Answer, Command, OrderService, RequestKey, Result
from servicekit.app import parts_of, runtime_of
from servicekit.auth import OrdersReader, OrdersWriter
from servicekit.catalog import StatusCatalog
from servicekit.db import DbConnection
from servicekit.errors import (
    FieldError,
    InvalidRequest,
    NotFound,
    ProblemResponse,
    problem_body,
    problem_response,
    problems,
)
from servicekit.pagination import decode_cursor, page_of

router = APIRouter(prefix="/v1/orders", tags=["orders"])
analytics_router = APIRouter(prefix="/v1", tags=["analytics"])
IdempotencyKey = Annotated[str | None, Header(max_length=200, description="A repeat returns the first response")]


_ONE_LINE = re.compile(ONE_LINE_PATTERN)


def _one_line_name(customer: Customer) -> Customer:
    # The Customer contract (shared with Kafka, whose released schema fixes it) cannot say so itself.
    if customer.name is not None and not _ONE_LINE.match(customer.name):
        raise ValueError("customer.name must be one line: no control characters or line separators")
    return customer


class OrderBody(BaseModel):
    """`PUT /v1/orders/{order_id}`: the order as the upstream system sees it (same as order.upserted)."""

    model_config = ConfigDict(extra="forbid")
    customer: Annotated[Customer, AfterValidator(_one_line_name)] = Field(
        description="`name`, when given, is one line: no control characters (tab, CR, U+001F, U+0085...) and no "
        "line separators (U+2028, U+2029)"
    )
    amount: Money
    currency: CurrencyCode
    placed_at: RequestDatetime
    statuses: StatusCodes = Field(default_factory=StatusCodes)
    source_sequence: int | None = Field(default=None, ge=0)
    occurred_at: RequestDatetime | None = None


class StatusBody(BaseModel):
    """`POST /v1/orders/{order_id}/status`: set one status by its code."""

    model_config = ConfigDict(extra="forbid")
    code: Slug
    occurred_at: RequestDatetime | None = None
    comment: str | None = Field(default=None, max_length=1000)


class StatusChange(BaseModel):
    """What a write did to one status type."""

    model_config = ConfigDict(populate_by_name=True)
    type: StatusType
    outcome: Outcome = Field(description="applied, unchanged (already in it) or stale (older than the current one)")
    from_: str | None = Field(alias="from")
    to: str
    sequence: int | None = Field(description="The order's change number, for an applied change")


class DetailsWritten(BaseModel):
    outcome: DetailsOutcome = Field(description="created, updated, unchanged or stale (ignored)")
    fields: list[str] = Field(description="The fields that differed")


class OrderWritten(BaseModel):
    """The answer to a write: each status change, the order after it and, for an upsert only, its details."""

    changes: list[StatusChange]
    order: OrderView
    details: DetailsWritten | None = Field(default=None, description="Only in the answer to an upsert")

    def body(self) -> dict[str, Any]:
        # A status write's answer has never had a `details` key: left out rather than null.
        return self.model_dump(mode="json", by_alias=True, exclude={"details"} if self.details is None else None)


def service(request: Request) -> OrderService:
    return parts_of(runtime_of(request), OrderService)


def _event_id(idempotency_key: str | None) -> str:
    # With a key, a retried request is the same event: the claim makes it a no-op even if it races.
    return f"http:{idempotency_key}" if idempotency_key else f"http:{uuid.uuid4()}"


async def _write(request: Request, command: Command, key: str | None, body: BaseModel) -> JSONResponse:
    """Apply `command`; with an Idempotency-Key, once: a repeat of the same request returns the first answer."""
    request_key = None
    if key is not None:
        fingerprint = f"{request.method} {request.url.path} {body.model_dump_json()}"
        request_key = RequestKey(key, hashlib.sha256(fingerprint.encode()).hexdigest())
    catalog = _catalog(request)
    code, payload = await service(request).handle_request(
        command, lambda conn, result: _written(conn, catalog, result), request_key
    )
    return _answer(code, payload)


def _answer(code: int, payload: dict[str, Any]) -> JSONResponse:
    # A refusal is stored and repeated like a success, as the problem it was.
    return ProblemResponse(payload, status_code=code) if code >= 400 else JSONResponse(payload, status_code=code)


def _refusal(result: Result) -> Answer:
    assert result.refused is not None
    refused = result.refused
    if refused.reason is Reason.UNKNOWN_ORDER:
        return 404, problem_body(404, refused.detail, code=str(refused.reason))
    return 422, problem_body(422, refused.detail, code=str(refused.reason), errors=[_field_error(refused)])


def _field_error(refused: Refused) -> FieldError:
    field = "statuses" if refused.reason is not Reason.UNKNOWN_ORDER else ""
    return FieldError(location="body", field=field, message=refused.detail, type=str(refused.reason))


async def _written(conn: DbConnection, catalog: StatusCatalog, result: Result) -> Answer:
    """The answer to a write, read in its transaction: each change, the order after it, an upsert's details."""
    if result.refused is not None:
        return _refusal(result)
    command = result.command
    view = await one_order(conn, catalog, command.partner_id, command.order_id)
    assert view is not None  # the command was applied: the order exists
    changes = [
        StatusChange(type=c.status_type, outcome=c.outcome, from_=c.from_status and c.from_status.code,
                     to=c.to_status.code, sequence=c.sequence)
        for c in result.changes
    ]  # fmt: skip
    details = result.details  # an upsert: were its details applied or ignored as stale?
    written = OrderWritten(
        changes=changes,
        order=view,
        details=DetailsWritten(outcome=details.outcome, fields=list(details.fields)) if details else None,
    )
    return 200, written.body()


_WRITE_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"model": OrderWritten, "description": "The order after the write; each change says whether it applied"},
    **problems(
        404,
        409,
        422,
        s404="`unknown_order`: set a status only of an order that exists (PUT it first)",
        s409="`idempotency_key_in_use` (a request with this Idempotency-Key still runs) or `concurrent_change` "
        "(another write held the order longer than this one waits): retry after `Retry-After` seconds",
        s422="A rule refused the change (`code`: unknown_status, archived_status, transition_not_allowed, "
        "not_initial_status, wrong_status_type; or `idempotency_key_reused`), or the body does not validate",
    ),
}


@router.put(
    "/{order_id}", summary="Create or update an order (same as order.upserted on Kafka)", responses=_WRITE_ANSWERS
)
async def upsert_order(
    order_id: Annotated[str, Field(min_length=1, max_length=128)],
    body: OrderBody,
    request: Request,
    who: OrdersWriter,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    occurred_at = body.occurred_at or datetime.now(UTC)
    command = Command(
        partner_id=who.partner_id,
        order_id=order_id,
        event_id=_event_id(idempotency_key),
        requests=tuple(
            Requested(code, occurred_at, body.source_sequence, expected_type=t) for t, code in body.statuses.items()
        ),
        details=OrderDetails(
            body.customer, body.amount, body.currency, body.placed_at, occurred_at, body.source_sequence
        ),
    )
    return await _write(request, command, idempotency_key, body)


@router.post("/{order_id}/status", summary="Set one status of an order by its code", responses=_WRITE_ANSWERS)
async def set_status(
    order_id: str, body: StatusBody, request: Request, who: OrdersWriter, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    requested = Requested(body.code, body.occurred_at or datetime.now(UTC), None, body.comment)
    command = Command(who.partner_id, order_id, _event_id(idempotency_key), (requested,))
    return await _write(request, command, idempotency_key, body)


def _catalog(request: Request) -> StatusCatalog:
    catalog = runtime_of(request).catalog
    assert catalog is not None
    return catalog


@router.get(
    "/{order_id}",
    summary="An order: current statuses with names, its status and details history",
    response_model=OrderDetail,
    responses=problems(404),
)
async def get_order(order_id: str, request: Request, who: OrdersReader) -> OrderDetail:
    async with runtime_of(request).pool.acquire() as conn:
        found = await order_detail(conn, _catalog(request), who.partner_id, order_id)
    if found is None:
        raise NotFound(f"no order '{order_id}'")
    return found


@router.get(
    "",
    summary="Orders filtered by status, customer and update time (cursor pages)",
    response_model=OrderPage,
    responses=problems(422, s422="`validation_failed`: a parameter, or a malformed cursor"),
)
async def list_orders(
    request: Request,
    who: OrdersReader,
    status_type: StatusType | None = None,
    code: str | None = None,
    customer_id: str | None = None,
    updated_from: RequestDatetime | None = None,
    updated_to: RequestDatetime | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    newest_first: Annotated[
        bool, Query(description="Most recently updated first; pass the same value with each page's cursor")
    ] = False,
) -> OrderPage:
    where = OrderFilter(
        status_type=status_type,
        code=code,
        customer_id=customer_id,
        updated_from=updated_from,
        updated_to=updated_to,
    )
    after = decode_cursor(cursor, datetime, str) if cursor else None
    async with runtime_of(request).pool.acquire() as conn:
        rows = await find_orders(conn, who.partner_id, where, after, limit + 1, newest_first=newest_first)
        page, next_cursor = page_of(rows, limit, lambda r: (r["updated_at"], r["order_id"]))
        items = await order_page(conn, _catalog(request), who.partner_id, page)
    return OrderPage(items=items, next_cursor=next_cursor)


def _analytics_status(request: Request, partner_id: str, code: str, field: str) -> StatusDefinition:
    definition = _catalog(request).get(partner_id, code)
    if definition is None:
        raise _refused_status(field, "unknown_status", f"no status with code '{code}'")
    if not definition.include_in_analytics:
        message = f"status '{code}' is not included in analytics; set include_in_analytics in the registry first"
        raise _refused_status(field, "not_in_analytics", message)
    return definition


def _refused_status(field: str, code: str, message: str) -> InvalidRequest:
    return InvalidRequest([FieldError(location="query", field=field, message=message, type=code)], code=code)


_ANALYTICS_ERRORS = problems(
    422, s422="`unknown_status`, or `not_in_analytics`: the status is not flagged for analytics"
)


@analytics_router.get(
    "/analytics/status-counts",
    summary="Current distribution and transitions into statuses",
    response_model=StatusCounts,
    response_model_by_alias=True,
)
async def status_counts(
    request: Request,
    who: OrdersReader,
    type: StatusType,
    from_: Annotated[RequestDatetime | None, Query(alias="from")] = None,
    to: RequestDatetime | None = None,
) -> StatusCounts:
    flagged = sorted(
        (d for d in _catalog(request).of_partner(who.partner_id) if d.type == type and d.include_in_analytics),
        key=lambda d: (d.position, d.code),
    )
    codes = [d.code for d in flagged]
    async with runtime_of(request).pool.acquire() as conn:
        current = await analytics.current_distribution(conn, who.partner_id, str(type), codes)
        entered = await analytics.transitions_into(conn, who.partner_id, codes, from_, to)
    return StatusCounts(
        type=type,
        from_=from_,
        to=to,
        statuses=[
            StatusCount(code=d.code, name=d.name, current=current.get(d.code, 0), entered=entered.get(d.code, 0))
            for d in flagged
        ],
    )


def _reporting_day(day: date) -> date:
    if not analytics.EARLIEST_DAY <= day <= analytics.LATEST_DAY:
        raise ValueError(f"the day must be between {analytics.EARLIEST_DAY} and {analytics.LATEST_DAY}")
    return day


def _known_time_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):  # ValueError: a path rather than a zone's name ("../x", "/etc")
        raise ValueError("not a time zone: give an IANA name such as Europe/Moscow or UTC") from None
    return name


ReportingDay = Annotated[date, AfterValidator(_reporting_day)]
TimeZoneName = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_known_time_zone)]


def _period(
    first_day: Annotated[ReportingDay, Query(description="The period's first day (YYYY-MM-DD), 1970 to 2999")],
    last_day: Annotated[
        ReportingDay,
        Query(description=f"Its last day, included; at most {analytics.MAX_PERIOD_DAYS} days after the first"),
    ],
    time_zone: Annotated[
        TimeZoneName, Query(description="The IANA time zone whose calendar counts the days, e.g. Europe/Moscow")
    ] = "UTC",
) -> analytics.Period:
    period = analytics.Period(first_day, last_day, time_zone)
    refused = period.refusal()
    if refused is not None:
        code, message = refused
        raise _refused_status("last_day", code, message)
    return period


ReportingPeriod = Annotated[analytics.Period, Depends(_period)]
_PERIOD_ERRORS = problems(
    422,
    s422=f"`reversed_range` (last_day is before first_day), `range_too_long` (more than "
    f"{analytics.MAX_PERIOD_DAYS} days), or `validation_failed`: a day that does not exist or is outside 1970 to "
    "2999, or a time zone IANA does not name",
)


def _flagged(request: Request, partner_id: str) -> list[StatusDefinition]:
    """The partner's statuses flagged for analytics, by type (general, delivery, payment), then by position."""
    types = list(StatusType)
    flagged = (d for d in _catalog(request).of_partner(partner_id) if d.include_in_analytics)
    return sorted(flagged, key=lambda d: (types.index(d.type), d.position, d.code))


@analytics_router.get(
    "/analytics/entries-per-day",
    summary="How many times orders entered each flagged status, day by day",
    response_model=EntriesPerDay,
    responses=_PERIOD_ERRORS,
)
async def entries_per_day(request: Request, who: OrdersReader, period: ReportingPeriod) -> EntriesPerDay:
    flagged = _flagged(request, who.partner_id)
    async with runtime_of(request).pool.acquire() as conn:
        counts = await analytics.entries_per_day(conn, who.partner_id, [d.code for d in flagged], period)
    statuses = [
        DailyEntries(code=d.code, name=d.name, type=d.type, per_day=counts[d.code], total=sum(counts[d.code]))
        for d in flagged
    ]
    return EntriesPerDay(
        first_day=period.first_day,
        last_day=period.last_day,
        time_zone=period.time_zone,
        days=period.days(),
        statuses=statuses,
    )


@analytics_router.get(
    "/analytics/transitions",
    summary="How many orders went from each flagged status to the next flagged one",
    response_model=Transitions,
    responses=_PERIOD_ERRORS,
)
async def transitions(request: Request, who: OrdersReader, period: ReportingPeriod) -> Transitions:
    flagged = _flagged(request, who.partner_id)
    async with runtime_of(request).pool.acquire() as conn:
        counts = await analytics.transitions_between(conn, who.partner_id, [d.code for d in flagged], period)
    by_code = {d.code: d for d in flagged}
    left = {code: sum(n for (came_from, _), n in counts.items() if came_from == code) for code in by_code}
    moves = [
        Transition(
            from_code=came_from,
            from_name=by_code[came_from].name,
            to_code=to,
            to_name=by_code[to].name,
            count=n,
            share=n / left[came_from],
        )
        for (came_from, to), n in counts.items()
    ]
    order = list(by_code)
    moves.sort(key=lambda m: (order.index(m.from_code), -m.count, order.index(m.to_code)))
    return Transitions(
        first_day=period.first_day, last_day=period.last_day, time_zone=period.time_zone, transitions=moves
    )


@analytics_router.get(
    "/analytics/time-in-status",
    summary="Median and p90 time orders spent in a status",
    response_model=TimeInStatus,
    responses=_ANALYTICS_ERRORS,
)
async def time_in_status(request: Request, who: OrdersReader, code: str) -> TimeInStatus:
    _analytics_status(request, who.partner_id, code, "code")
    async with runtime_of(request).pool.acquire() as conn:
        return TimeInStatus(code=code, **await analytics.time_in_status(conn, who.partner_id, code))


@analytics_router.get(
    "/segments/customers",
    summary="Customers whose orders entered a status in a window",
    response_model=Segment,
    responses=_ANALYTICS_ERRORS,
)
async def customers_segment(
    request: Request,
    who: OrdersReader,
    status_code: Annotated[str, Query(alias="status")],
    from_: Annotated[RequestDatetime | None, Query(alias="from")] = None,
    to: RequestDatetime | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Segment:
    _analytics_status(request, who.partner_id, status_code, "status")
    (after,) = decode_cursor(cursor, str) if cursor else ("",)
    async with runtime_of(request).pool.acquire() as conn:
        rows = await analytics.customers_entering(conn, who.partner_id, status_code, from_, to, after, limit + 1)
    page, next_cursor = page_of(rows, limit, lambda row: (row["customer_id"],))
    items = [SegmentCustomer.model_validate(dict(row)) for row in page]
    return Segment(status=status_code, items=items, next_cursor=next_cursor)


def install_error_handlers(app: FastAPI) -> None:
    async def refused(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Refused)
        return problem_response(422, exc.detail, code=str(exc.reason), errors=[_field_error(exc)])

    app.add_exception_handler(Refused, refused)
