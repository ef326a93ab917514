"""What the orders API shows: orders as response models, the list query and the order's two histories. Beside
`orders.analytics` (reports and segments), this is the service's read side; writes go through `orders.services`.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from contracts.orders import Customer
from contracts.statuses import StatusType
from orders.domain import Order
from orders.repository import details_history_of, history_of, load_orders
from servicekit.catalog import StatusCatalog
from servicekit.db import DbConnection

# As this API has always written them (`datetime.isoformat()`: +00:00, not Z).
Time = Annotated[datetime, PlainSerializer(datetime.isoformat, return_type=str, when_used="json")]


class CurrentStatus(BaseModel):
    code: str
    name: str = Field(description="The status's current name in the registry (its name at the change if gone)")
    localized_names: dict[str, str]
    occurred_at: Time = Field(description="Upstream time: when the order entered the status")
    recorded_at: Time = Field(description="When this service applied it")
    since: Time = Field(description="The same as occurred_at, kept for existing clients")


class DetailsWatermark(BaseModel):
    """The upsert whose details are shown; an older one is ignored as stale."""

    occurred_at: Time | None
    source_sequence: int | None


class OrderView(BaseModel):
    order_id: str
    customer: Customer
    amount: str
    currency: str
    placed_at: Time
    statuses: dict[StatusType, CurrentStatus]
    status_changes: int
    details_watermark: DetailsWatermark


class ListedOrder(OrderView):
    updated_at: Time = Field(description="When anything of the order last changed: the list's order")


class OrderPage(BaseModel):
    items: list[ListedOrder]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


class StatusHistoryEntry(BaseModel):
    type: StatusType
    outcome: str = Field(description="applied, unchanged (already in it) or stale (older than the current one)")
    from_code: str | None
    to_code: str
    to_name: str
    sequence: int | None
    source_sequence: int | None
    occurred_at: Time
    recorded_at: Time
    event_id: str = Field(description="The upstream event's id, or http:<key> for a write over this API")
    comment: str | None


class DetailsHistoryEntry(BaseModel):
    outcome: str = Field(description="created, updated, unchanged or stale")
    fields: list[str] = Field(description="The fields that differed")
    source_sequence: int | None
    occurred_at: Time | None
    recorded_at: Time
    event_id: str


class OrderDetail(OrderView):
    history: list[StatusHistoryEntry]
    details_history: list[DetailsHistoryEntry]


class StatusCount(BaseModel):
    code: str
    name: str
    current: int = Field(description="Orders in it now")
    entered: int = Field(description="Transitions into it in the window")


class StatusCounts(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    type: StatusType
    from_: Time | None = Field(alias="from")
    to: Time | None
    statuses: list[StatusCount] = Field(description="Only the statuses flagged include_in_analytics")


class TimeInStatus(BaseModel):
    code: str
    completed_stays: int
    median_seconds: float | None
    p90_seconds: float | None


class DailyEntries(BaseModel):
    code: str
    name: str
    type: StatusType
    per_day: list[int] = Field(description="How many times orders entered it on each of `days`, zeros included")
    total: int = Field(description="The sum of `per_day`")


class EntriesPerDay(BaseModel):
    first_day: date
    last_day: date
    time_zone: str = Field(description="The IANA time zone whose calendar days these are")
    days: list[date] = Field(description="Every day of the period, in order")
    statuses: list[DailyEntries] = Field(
        description="Only the statuses flagged include_in_analytics, by type (general, delivery, payment), then "
        "by their position"
    )


class Transition(BaseModel):
    from_code: str
    from_name: str
    to_code: str
    to_name: str
    count: int = Field(description="How many times an order went from `from_code` to `to_code` in the period")
    share: float = Field(
        description="`count` as a fraction (0 to 1) of every move from `from_code` to a flagged status in the period"
    )


class Transitions(BaseModel):
    first_day: date
    last_day: date
    time_zone: str = Field(description="The IANA time zone whose calendar days these are")
    transitions: list[Transition] = Field(
        description="Moves between statuses flagged include_in_analytics: from each to the next flagged one the "
        "order entered, of any type (statuses not flagged in between are skipped), counted on the day it arrived. "
        "By the from-status's type and position, then the most frequent first"
    )


class SegmentCustomer(BaseModel):
    customer_id: str
    name: str | None
    phone: str | None
    sms_consent: bool | None
    orders: int
    last_entered_at: Time


class Segment(BaseModel):
    status: str
    items: list[SegmentCustomer]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


class OrderFilter(BaseModel):
    model_config = ConfigDict(frozen=True)

    status_type: StatusType | None = None
    code: str | None = None
    customer_id: str | None = None
    updated_from: datetime | None = None
    updated_to: datetime | None = None


def order_view(order: Order, catalog: StatusCatalog) -> OrderView:
    """An order with its current statuses under their current names from the registry replica."""
    statuses = {}
    for status_type, applied in order.statuses.items():
        current = catalog.get(order.partner_id, applied.ref.code)
        statuses[status_type] = CurrentStatus(
            code=applied.ref.code,
            name=current.name if current else applied.ref.name,
            localized_names=current.localized_names if current else {},
            occurred_at=applied.entered_at,
            recorded_at=applied.recorded_at,
            since=applied.entered_at,
        )
    return OrderView(
        order_id=order.order_id,
        customer=order.customer,
        amount=str(order.amount),
        currency=order.currency,
        placed_at=order.placed_at,
        statuses=statuses,
        status_changes=order.last_sequence,
        details_watermark=DetailsWatermark(
            occurred_at=order.details_occurred_at, source_sequence=order.details_source_sequence
        ),
    )


async def one_order(conn: DbConnection, catalog: StatusCatalog, partner_id: str, order_id: str) -> OrderView | None:
    found = (await load_orders(conn, [(partner_id, order_id)], lock=False)).get((partner_id, order_id))
    return order_view(found, catalog) if found else None


async def order_detail(
    conn: DbConnection, catalog: StatusCatalog, partner_id: str, order_id: str
) -> OrderDetail | None:
    view = await one_order(conn, catalog, partner_id, order_id)
    if view is None:
        return None
    history = await history_of(conn, partner_id, order_id)
    details = await details_history_of(conn, partner_id, order_id)
    return OrderDetail(
        **view.model_dump(),
        history=[StatusHistoryEntry.model_validate(h) for h in history],
        details_history=[DetailsHistoryEntry.model_validate(d) for d in details],
    )


async def find_orders(
    conn: DbConnection,
    partner_id: str,
    where: OrderFilter,
    after: tuple[datetime, str] | None,
    limit: int,
    *,
    newest_first: bool = False,
) -> list[asyncpg.Record]:
    """(order_id, updated_at) of the partner's orders matching `where`, in update order (or its reverse), after
    `after` in that order. Either way one scan of `orders_by_updated`, forwards or backwards."""
    after_time, after_id = after or (None, "")
    beyond, direction = ("<", "DESC") if newest_first else (">", "ASC")
    return await conn.fetch(
        "SELECT o.order_id, o.updated_at FROM orders o WHERE o.partner_id = $1 "
        "AND ($2::text IS NULL AND $3::text IS NULL OR EXISTS (SELECT 1 FROM order_statuses s "
        "  WHERE s.partner_id = o.partner_id AND s.order_id = o.order_id "
        "  AND ($2::text IS NULL OR s.code = $2) AND ($3::text IS NULL OR s.type = $3))) "
        "AND ($4::text IS NULL OR o.customer_id = $4) "
        "AND ($5::timestamptz IS NULL OR o.updated_at >= $5) AND ($6::timestamptz IS NULL OR o.updated_at < $6) "
        f"AND ($7::timestamptz IS NULL OR (o.updated_at, o.order_id) {beyond} ($7, $8)) "
        f"ORDER BY o.updated_at {direction}, o.order_id {direction} LIMIT $9",
        partner_id,
        where.code,
        str(where.status_type) if where.status_type else None,
        where.customer_id,
        where.updated_from,
        where.updated_to,
        after_time,
        after_id,
        limit,
    )


async def order_page(
    conn: DbConnection, catalog: StatusCatalog, partner_id: str, rows: list[asyncpg.Record]
) -> list[ListedOrder]:
    found = await load_orders(conn, [(partner_id, r["order_id"]) for r in rows], lock=False)
    return [
        ListedOrder(**order_view(found[(partner_id, r["order_id"])], catalog).model_dump(), updated_at=r["updated_at"])
        for r in rows
    ]
