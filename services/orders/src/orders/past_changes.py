"""The partner's past status changes, each with the order as it was at that moment: what the campaigns backtest
replays (`GET /v1/status-changes`, NDJSON).

PostgreSQL does the work: one range of `status_history_changes` in the order the changes were recorded, and per
change one probe of `status_history_by_order` for the order's other statuses as they were just before it. Each
line is built as JSON by the server, so this process only joins text: a backtest of hundreds of thousands of changes
costs the orders service's event loop little besides the copying, and it reads through a server-side cursor in
bounded batches (nothing is held in memory but one batch), yielding to the consumers between them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from contracts.orders import OrderStatusChanged
from contracts.primitives import RequestDatetime, Slug
from contracts.statuses import StatusType
from servicekit.app import runtime_of
from servicekit.auth import OrdersReader
from servicekit.catalog import StatusCatalog
from servicekit.db import DbConnection
from servicekit.errors import FieldError, InvalidRequest, problems

router = APIRouter(prefix="/v1", tags=["orders"])

MAX_PERIOD = timedelta(days=90)
BATCH_ROWS = 1000  # rows per fetch of the cursor: one batch in memory, and a turn for the consumers between batches
NDJSON = "application/x-ndjson"

# $1 partner, $2 type, $3 target codes, [$4, $5) the period of recorded_at, $6 the codes flagged for analytics.
# The statuses "as of that moment" are those of the order's applied rows before this one (by id, the order in which
# this service applied them, which is what its published event carried), the changed type set to its new status.
# The order's details (customer, amount) are as they are now: their history keeps which fields changed, not values.
PAST_CHANGES_SQL = """
SELECT json_build_object(
    'event_id', h.event_id,
    'recorded_at', h.recorded_at,
    'change', json_build_object(
        'order_id', h.order_id,
        'status_type', h.type,
        'from_status', before.statuses -> h.type,
        'to_status', json_build_object('code', h.to_code, 'name', h.to_name),
        'to_include_in_analytics', h.to_code = ANY($6::text[]),
        'sequence', greatest(coalesce(h.sequence, 1), 1),
        'occurred_at', h.occurred_at,
        'order', json_build_object(
            'order_id', o.order_id,
            'statuses', coalesce(before.statuses, '{}'::jsonb)
                        || jsonb_build_object(h.type, jsonb_build_object('code', h.to_code, 'name', h.to_name)),
            'amount', o.amount::text,
            'currency', o.currency,
            'customer', json_build_object('id', o.customer_id, 'phone', o.customer_phone, 'name', o.customer_name,
                                          'sms_consent', o.sms_consent),
            'placed_at', o.placed_at)))::text
FROM status_history h
JOIN orders o ON o.partner_id = h.partner_id AND o.order_id = h.order_id
LEFT JOIN LATERAL (
    SELECT jsonb_object_agg(p.type, jsonb_build_object('code', p.to_code, 'name', p.to_name)) AS statuses
    FROM (SELECT DISTINCT ON (p.type) p.type, p.to_code, p.to_name
          FROM status_history p
          WHERE p.partner_id = h.partner_id AND p.order_id = h.order_id AND p.id < h.id AND p.outcome = 'applied'
          ORDER BY p.type, p.id DESC) p
) before ON true
WHERE h.partner_id = $1 AND h.type = $2 AND h.outcome = 'applied' AND h.to_code = ANY($3::text[])
  AND h.recorded_at >= $4 AND h.recorded_at < $5
ORDER BY h.recorded_at, h.id
"""


class PastChange(BaseModel):
    """One line of the stream: a change as orders published it, with its event id and when it was applied."""

    event_id: str = Field(description="The id of the event that made the change (the published event's cause)")
    recorded_at: datetime = Field(description="When this service applied it: when campaigns would have evaluated it")
    change: OrderStatusChanged = Field(
        description="As published, the order's statuses as they were then; its details (customer, amount) as now"
    )


def _period_problems(since: datetime, until: datetime) -> list[FieldError]:
    if until <= since:
        return [FieldError(location="query", field="until", message="must be after since", type="period_reversed")]
    if until - since > MAX_PERIOD:
        message = f"the period may span at most {MAX_PERIOD.days} days"
        return [FieldError(location="query", field="until", message=message, type="period_too_long")]
    return []


async def past_change_lines(conn: DbConnection, arguments: Sequence[object]) -> AsyncIterator[bytes]:
    """The stream's body: batches of NDJSON lines, read through a server-side cursor in one read-only snapshot."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute("SET LOCAL TimeZone = 'UTC'")
        cursor = await conn.cursor(PAST_CHANGES_SQL, *arguments)
        while rows := await cursor.fetch(BATCH_ROWS):
            yield ("\n".join(row[0] for row in rows) + "\n").encode()


@router.get(
    "/status-changes",
    summary="The partner's past changes into some statuses, each with the order as it was then (NDJSON)",
    response_class=StreamingResponse,
    responses={
        200: {"content": {NDJSON: {"schema": PastChange.model_json_schema()}}, "description": "One PastChange a line"},
        **problems(422, s422="`period_reversed` or `period_too_long` (at most 90 days)"),
    },
)
async def past_status_changes(
    request: Request,
    who: OrdersReader,
    status_type: StatusType,
    since: RequestDatetime,
    until: RequestDatetime,
    to: Annotated[list[Slug], Query(min_length=1, max_length=100, description="Target codes; repeat for each")],
) -> StreamingResponse:
    """Every applied change of `status_type` into one of the `to` codes recorded in [since, until), in the order they
    were applied, as the `OrderStatusChanged` orders published for it (its `order.statuses` as they were at that
    moment). The order's customer and amount are as they are now. Read through a server-side cursor: a client that
    goes away stops the query."""
    if refused := _period_problems(since, until):
        raise InvalidRequest(refused, code=refused[0].type)
    catalog: StatusCatalog | None = runtime_of(request).catalog
    flagged = [d.code for d in catalog.of_partner(who.partner_id) if d.include_in_analytics] if catalog else []
    arguments = (who.partner_id, str(status_type), sorted(set(to)), since, until, flagged)
    pool = runtime_of(request).pool

    async def body() -> AsyncIterator[bytes]:
        async with pool.acquire() as conn:
            async for chunk in past_change_lines(conn, arguments):
                yield chunk

    return StreamingResponse(body(), media_type=NDJSON)
