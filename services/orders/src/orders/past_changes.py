"""The partner's past status changes, each with the order as it was at that moment: what the campaigns backtest
replays (`GET /v1/status-changes`, NDJSON or TSV).

PostgreSQL does the work: one range of `status_history_changes` in the order the changes were recorded, each row
joined to its order; the history row itself keeps the order's statuses as the change's event carried them. Each line
is built by the server, a JSON array or, when the client accepts TSV (the campaigns backtest does), COPY's own text
format of the same items (contracts.past_changes), and sent by COPY, whose bytes this process passes on as they
come: a backtest of hundreds of thousands of changes costs the orders service's event loop little besides the
copying, and a few pieces are in memory at most (the query waits for a slow client).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from contracts.past_changes import LINE_SCHEMA, NDJSON, TSV, TSV_LINE
from contracts.primitives import RequestDatetime, Slug
from contracts.statuses import StatusType
from servicekit.app import runtime_of
from servicekit.auth import OrdersReader
from servicekit.catalog import StatusCatalog
from servicekit.db import DbConnection
from servicekit.errors import FieldError, InvalidRequest, problems

router = APIRouter(prefix="/v1", tags=["orders"])

MAX_PERIOD = timedelta(days=90)

# $1 partner, $2 type, $3 target codes, [$4, $5) the period of recorded_at, $6 the codes flagged for analytics.
# One line of contracts.past_changes.FIELDS per change, in the order they were recorded (the range of the index
# status_history_changes). The order's statuses are those its published event carried, which the history row keeps
# (migration 1008): reading them there, not probing the order's earlier rows per change, halved the query's CPU.
# A row without them (all three types' codes null, where a row since 1008 has at least its own type's) was written
# before 1008, or by the previous release while this one rolled out: for it alone, `s` probes the order's applied rows
# before it (status_history_by_order), the first of each type the latest (an ordered subquery feeds array_agg in its
# order), the changed type's then being the change's `to`. For the other rows the probe's condition is false before
# any row is read (a one-time filter): `s` holds nulls, but for the changed type's status, which the row has too.
# The order's details (customer, amount) are as they are now: their history keeps which fields changed, not values.
# The items are selected as one JSON array (PAST_CHANGES_SQL) or as columns, for COPY's text format (..._TSV_SQL).
ITEMS = """
    o.customer_id, h.event_id, h.recorded_at, h.order_id, h.type, h.from_code, coalesce(h.from_name, s.from_name),
    h.to_code, h.to_name, h.to_code = ANY($6::text[]), greatest(coalesce(h.sequence, 1), 1), h.occurred_at,
    coalesce(h.general_code, s.general_code), coalesce(h.general_name, s.general_name),
    coalesce(h.delivery_code, s.delivery_code), coalesce(h.delivery_name, s.delivery_name),
    coalesce(h.payment_code, s.payment_code), coalesce(h.payment_name, s.payment_name),
    o.amount::text, o.currency, o.customer_phone, o.customer_name, o.sms_consent, o.placed_at"""
FROM = """
FROM status_history h
JOIN orders o ON o.partner_id = h.partner_id AND o.order_id = h.order_id
LEFT JOIN LATERAL (
    SELECT (array_agg(b.to_name) FILTER (WHERE b.type = h.type))[1] AS from_name,
           CASE h.type WHEN 'general' THEN h.to_code
                ELSE (array_agg(b.to_code) FILTER (WHERE b.type = 'general'))[1] END AS general_code,
           CASE h.type WHEN 'general' THEN h.to_name
                ELSE (array_agg(b.to_name) FILTER (WHERE b.type = 'general'))[1] END AS general_name,
           CASE h.type WHEN 'delivery' THEN h.to_code
                ELSE (array_agg(b.to_code) FILTER (WHERE b.type = 'delivery'))[1] END AS delivery_code,
           CASE h.type WHEN 'delivery' THEN h.to_name
                ELSE (array_agg(b.to_name) FILTER (WHERE b.type = 'delivery'))[1] END AS delivery_name,
           CASE h.type WHEN 'payment' THEN h.to_code
                ELSE (array_agg(b.to_code) FILTER (WHERE b.type = 'payment'))[1] END AS payment_code,
           CASE h.type WHEN 'payment' THEN h.to_name
                ELSE (array_agg(b.to_name) FILTER (WHERE b.type = 'payment'))[1] END AS payment_name
    FROM (SELECT b.type, b.to_code, b.to_name FROM status_history b
          WHERE h.general_code IS NULL AND h.delivery_code IS NULL AND h.payment_code IS NULL
            AND b.partner_id = h.partner_id AND b.order_id = h.order_id AND b.id < h.id AND b.outcome = 'applied'
          ORDER BY b.id DESC) b
) s ON true
WHERE h.partner_id = $1 AND h.type = $2 AND h.outcome = 'applied' AND h.to_code = ANY($3::text[])
  AND h.recorded_at >= $4 AND h.recorded_at < $5
ORDER BY h.recorded_at, h.id
"""
PAST_CHANGES_SQL = f"SELECT json_build_array({ITEMS})::text{FROM}"
PAST_CHANGES_TSV_SQL = f"SELECT{ITEMS}{FROM}"

# The stream must start at once and go in the index's order: planned for the whole result (a protocol-level portal
# is planned as a query, whatever is fetched of it), 333,333 changes were read in full, hashed with their orders and
# sorted before the first line: 2.4 s on one core while the backtest's workers waited (the bench's preloaded history,
# whose period is every row of the partner's). Without sorts the plan is the index range, each row joined to its
# order: the first lines in 20 ms, all of them in about the same CPU, and read as the workers take them. Neither
# parallel workers (one scan, read in order) nor JIT (its compilation before the first row) help such a stream.
# TimeZone and DateStyle: the times' text in TSV (`2026-11-08 06:41:22.356298+00`) whatever the server's defaults.
STREAMING_PLAN = (
    "SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, YMD'; SET LOCAL enable_sort = off; "
    "SET LOCAL max_parallel_workers_per_gather = 0; SET LOCAL jit = off"
)


def _period_problems(since: datetime, until: datetime) -> list[FieldError]:
    if until <= since:
        return [FieldError(location="query", field="until", message="must be after since", type="period_reversed")]
    if until - since > MAX_PERIOD:
        message = f"the period may span at most {MAX_PERIOD.days} days"
        return [FieldError(location="query", field="until", message=message, type="period_too_long")]
    return []


# COPY's CSV form with a delimiter and a quote that JSON text never holds (it escapes every character below 0x20):
# each line leaves PostgreSQL as its JSON text exactly, never quoted or escaped, and this process passes the bytes on
# as they arrive, without a row object, a decode and an encode per line as a cursor's rows cost (a backtest's
# hundreds of thousands of lines were about a second of this process's CPU). TSV is COPY's text format as it is.
DELIMITER, QUOTE = "\x1f", "\x1e"
COPIED: dict[str, tuple[str, Literal["csv", "text"], str | None, str | None]] = {  # query, format, delimiter, quote
    NDJSON: (PAST_CHANGES_SQL, "csv", DELIMITER, QUOTE),
    TSV: (PAST_CHANGES_TSV_SQL, "text", None, None),
}
END = b""


async def past_change_lines(
    conn: DbConnection, arguments: Sequence[object], media_type: str = NDJSON
) -> AsyncIterator[bytes]:
    """The stream's body: lines of `media_type` (NDJSON or TSV) as PostgreSQL sends them, in one read-only snapshot.
    A few pieces wait at most: while the client reads slowly, the copy waits, and so does the query (asyncpg stops
    reading its socket); when the client goes away, the copy is cancelled, which cancels the query."""
    pieces: asyncio.Queue[bytes] = asyncio.Queue(maxsize=4)

    async def piece(data: bytes) -> None:  # typed bytes, but asyncpg gives its bytearray, which a response refuses
        await pieces.put(bytes(data))

    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute(STREAMING_PLAN)
        query, form, delimiter, quote = COPIED[media_type]
        copied = conn.copy_from_query(query, *arguments, output=piece, format=form, delimiter=delimiter, quote=quote)
        copy = asyncio.ensure_future(copied)
        try:
            while next_piece := await _next(pieces, copy):
                yield next_piece + b"".join(_waiting(pieces))  # one response chunk for what has come
            await copy  # its error, if it ended with one
        finally:
            copy.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await copy


def _waiting(pieces: asyncio.Queue[bytes]) -> Iterator[bytes]:
    while not pieces.empty():
        yield pieces.get_nowait()


async def _next(pieces: asyncio.Queue[bytes], copy: asyncio.Future[str]) -> bytes:
    """The next piece, or END once the copy ended (well or not) and every piece it gave was taken."""
    if pieces.empty() and not copy.done():
        taken = asyncio.ensure_future(pieces.get())
        try:
            await asyncio.wait((taken, copy), return_when=asyncio.FIRST_COMPLETED)
            if taken.done():
                return taken.result()
        finally:
            taken.cancel()  # (a waiting get gives up no piece; nor is it left pending when the stream is closed)
    return END if pieces.empty() else pieces.get_nowait()


@router.get(
    "/status-changes",
    summary="The partner's past changes into some statuses, each with the order as it was then (NDJSON or TSV)",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {
                NDJSON: {"schema": LINE_SCHEMA},
                TSV: {"schema": {"type": "string", "description": TSV_LINE}},
            },
            "description": "One past change a line: a JSON array, or its items in PostgreSQL's COPY text format",
        },
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
    were applied, as the `OrderStatusChanged` orders published for it (the order's statuses as they were at that
    moment), one array a line (`contracts.past_changes.FIELDS`). The order's customer and amount are as they are
    now. NDJSON, or TSV when the client accepts `text/tab-separated-values` (PostgreSQL's COPY text format: the same
    items, cheaper to write). A client that goes away stops the query."""
    if refused := _period_problems(since, until):
        raise InvalidRequest(refused, code=refused[0].type)
    catalog: StatusCatalog | None = runtime_of(request).catalog
    flagged = [d.code for d in catalog.of_partner(who.partner_id) if d.include_in_analytics] if catalog else []
    arguments = (who.partner_id, str(status_type), sorted(set(to)), since, until, flagged)
    pool = runtime_of(request).pool
    media_type = TSV if _accepts_tsv(request.headers.get("accept", "")) else NDJSON

    async def body() -> AsyncIterator[bytes]:
        async with pool.acquire() as conn:
            async for chunk in past_change_lines(conn, arguments, media_type):
                yield chunk

    return StreamingResponse(body(), media_type=media_type)


def _accepts_tsv(accept: str) -> bool:
    """Whether the Accept header names TSV with a quality above 0; anything else gets NDJSON, the default."""
    for offer in accept.split(","):
        media_type, *parameters = (part.strip() for part in offer.split(";"))
        if media_type.lower() == TSV:
            return _quality(parameters) > 0
    return False


def _quality(parameters: list[str]) -> float:
    """An offer's q (RFC 9110: 1 when absent; a malformed one counts as absent)."""
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 1.0
    return 1.0
