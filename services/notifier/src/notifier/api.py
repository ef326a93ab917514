"""HTTP API of the notifier: a partner's messages and opt-outs (JWT-scoped), and the provider webhooks."""

from __future__ import annotations

import hmac
import uuid
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StringConstraints

from contracts.primitives import Identifier
from contracts.sms import SenderId
from notifier.domain import Attempt, InvalidPhone, Message, MessageStatus, OptOut, Receipt, ReplayRecord
from notifier.optouts import OptOuts, handle_inbound
from notifier.providers.base import InboundSms
from notifier.providers.http import HttpProvider, parse_delivery_report
from notifier.repository import MessageFilter, MessageRepository
from notifier.sending import Sending
from notifier.testsends import TestSendRequest, TestSends
from servicekit.app import parts_dependency
from servicekit.auth import MessagesReader, MessagesWriter
from servicekit.errors import FieldError, InvalidRequest, NotFound, Unauthorized, problem_response, problems
from servicekit.http import register_id_in_path
from servicekit.pagination import decode_cursor, page_of

router = APIRouter(prefix="/v1", tags=["notifier"])
register_id_in_path("message_id", ("test",))

SendingParts = Annotated[Sending, Depends(parts_dependency(Sending))]
"""A route parameter: the notifier's provider, receipts and dispatcher, as its start-up built them."""


class MessagePage(BaseModel):
    items: list[Message]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


class MessageDetail(Message):
    attempt_log: list[Attempt]
    receipts: list[Receipt]
    replays: list[ReplayRecord] = Field(description="Replays of its dead letter: a new round, or why not")


class TestSendBody(BaseModel):
    phone: Annotated[str, StringConstraints(max_length=32)] = Field(
        description="A mobile number, with its country code (E.164 or as typed: '+7 916 123-45-67')"
    )
    text: Annotated[str, StringConstraints(min_length=1, max_length=1600)] = Field(
        description="The rendered text to send (the console sends its preview's)"
    )
    sender: SenderId | None = Field(default=None, description="Alphanumeric sender id; null: the default")
    campaign_id: Identifier | None = Field(
        default=None, description="The campaign being tested, to find its tests in the list; null: `test-send`"
    )


class OptOutPage(BaseModel):
    items: list[OptOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


class ReportResult(BaseModel):
    received: int
    matched: int


class InboundReply(BaseModel):
    from_: str = Field(alias="from", description="The sender's number, E.164")
    text: str = Field(max_length=1600)


class InboundResult(BaseModel):
    opted_out_partners: list[str]


async def _invalid_phone(_: Request, exc: Exception) -> JSONResponse:
    error = FieldError(location="path", field="phone", message=str(exc), type="invalid_phone")
    return problem_response(422, str(exc), code="invalid_phone", errors=[error])


def install_error_handlers(app: FastAPI) -> None:
    """The domain's refusal of a phone number is a 422 naming the path parameter, never a 500."""
    app.add_exception_handler(InvalidPhone, _invalid_phone)


def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.runtime.pool
    return pool


@router.get(
    "/messages",
    response_model=MessagePage,
    tags=["messages"],
    responses=problems(422, s422="`validation_failed`: a parameter, or a malformed cursor"),
)
async def list_messages(
    request: Request,
    who: MessagesReader,
    order_id: str | None = None,
    phone: str | None = None,
    campaign_id: str | None = None,
    status_: Annotated[MessageStatus | None, Query(alias="status")] = None,
    is_test: Annotated[bool | None, Query(description="true: only test sends; false: none of them")] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> MessagePage:
    """Newest first. The cursor names the last message of the page, nothing more."""
    (after,) = decode_cursor(cursor, uuid.UUID) if cursor else (None,)
    where = MessageFilter(order_id=order_id, phone=phone, campaign_id=campaign_id, status=status_, is_test=is_test)
    async with _pool(request).acquire() as conn:
        rows = await MessageRepository(conn, who.partner_id).page(where, after=after, limit=limit + 1)
    items, next_cursor = page_of(rows, limit, lambda message: (message.message_id,))
    return MessagePage(items=items, next_cursor=next_cursor)


@router.post(
    "/messages/test",
    response_model=Message,
    status_code=status.HTTP_201_CREATED,
    tags=["messages"],
    responses=problems(
        422,
        429,
        s422="`invalid_phone`: not a mobile number; `opted_out`: the number is on the opt-out ledger (both name "
        "`phone` in `errors`)",
        s429="`test_send_limited`: this person's test sends of the last hour are used up; `Retry-After` (and "
        "`retry_after_s`, `retry_at`) say when the next one is possible",
    ),
)
async def send_test(body: TestSendBody, request: Request, who: MessagesWriter, sending: SendingParts) -> Message:
    """A test send: `text` to `phone` through the provider, like any SMS, marked `is_test` (never counted in a
    campaign's stats, caps or analytics). Limited per person (the token's `act.sub`; an API client's own tokens
    count as one person) to `TEST_SENDS_PER_HOUR` in any hour, across every instance."""
    actor = who.actor or f"client:{who.client_id}"
    tests = TestSends(_pool(request), sending.dispatcher, request.app.state.settings.test_sends_per_hour)
    wanted = TestSendRequest(phone=body.phone, text=body.text, sender=body.sender, campaign_id=body.campaign_id)
    return await tests.send(who.partner_id, actor, wanted)


@router.get(
    "/messages/{message_id:message_id}", response_model=MessageDetail, tags=["messages"], responses=problems(404)
)
async def get_message(message_id: str, request: Request, who: MessagesReader) -> MessageDetail:
    async with _pool(request).acquire() as conn:
        repo = MessageRepository(conn, who.partner_id)
        message = await repo.get(message_id)
        if message is None:
            raise NotFound(f"no message '{message_id}'")
        attempts, receipts = await repo.attempts(message_id), await repo.receipts(message_id)
        replays = await repo.replays(message_id)
    return MessageDetail(**message.model_dump(), attempt_log=attempts, receipts=receipts, replays=replays)


@router.post(
    "/opt-outs/{phone}",
    response_model=OptOut,
    tags=["opt-outs"],
    responses={201: {"description": "Opted out now", "model": OptOut}, **problems(422, s422="`invalid_phone`")},
)
async def opt_out(phone: str, request: Request, response: Response, who: MessagesWriter) -> OptOut:
    """Opt a number out of every SMS of this partner, marketing and transactional (a customer's STOP outranks a
    campaign's flag); repeating it is a no-op (200)."""
    entry, created = await OptOuts(_pool(request), who.partner_id).add(phone)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return entry


@router.delete(
    "/opt-outs/{phone}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["opt-outs"],
    responses=problems(404, 422, s404="The number is not opted out", s422="`invalid_phone`"),
)
async def opt_in(phone: str, request: Request, who: MessagesWriter) -> Response:
    await OptOuts(_pool(request), who.partner_id).remove(phone)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/opt-outs",
    response_model=OptOutPage,
    tags=["opt-outs"],
    responses=problems(422, s422="`validation_failed`: a parameter, or a malformed cursor"),
)
async def list_opt_outs(
    request: Request,
    who: MessagesReader,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> OptOutPage:
    """By phone."""
    (after,) = decode_cursor(cursor, str) if cursor else (None,)
    rows = await OptOuts(_pool(request), who.partner_id).list(after=after, limit=limit + 1)
    items, next_cursor = page_of(rows, limit, lambda opt_out: (opt_out.phone,))
    return OptOutPage(items=items, next_cursor=next_cursor)


def _check_secret(request: Request, secret: str | None) -> None:
    expected = request.app.state.settings.delivery_report_secret
    if secret is None or not hmac.compare_digest(secret.encode(), expected.encode()):
        raise Unauthorized("missing or wrong X-Webhook-Secret", challenge="X-Webhook-Secret")


Secret = Annotated[str | None, Header(alias="X-Webhook-Secret")]


_WEBHOOK_ERRORS = problems(401, s401="Missing or wrong X-Webhook-Secret")


@router.post(
    "/delivery-reports/http",
    response_model=ReportResult,
    tags=["webhooks"],
    responses={**_WEBHOOK_ERRORS, **problems(422, s422="`malformed_report`: not a report of the HTTP gateway")},
)
async def http_delivery_reports(
    request: Request, sending: SendingParts, x_webhook_secret: Secret = None
) -> ReportResult:
    """Delivery reports of the HTTP gateway: one JSON object or a list, authenticated by the shared secret."""
    _check_secret(request, x_webhook_secret)
    try:
        reports = parse_delivery_report(await request.body())
    except ValueError as exc:
        error = FieldError(location="body", field="", message=str(exc), type="malformed_report")
        raise InvalidRequest([error], code="malformed_report") from exc
    matched = await sending.receipts.apply(HttpProvider.name, reports)
    return ReportResult(received=len(reports), matched=matched)


@router.post("/inbound/http", response_model=InboundResult, tags=["webhooks"], responses=_WEBHOOK_ERRORS)
async def http_inbound(body: InboundReply, request: Request, x_webhook_secret: Secret = None) -> InboundResult:
    """A reply from a handset through the HTTP gateway; STOP / СТОП / ОТПИСКА opts the number out."""
    _check_secret(request, x_webhook_secret)
    partners = await handle_inbound(_pool(request), InboundSms(phone=body.from_, text=body.text))
    return InboundResult(opted_out_partners=partners)
