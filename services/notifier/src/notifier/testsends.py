"""A marketer's test send (`POST /v1/messages/test`, the console's "Send a test"): the preview's text to a phone they
type, sent like any SMS (the message row, its first attempt recorded before the provider call, the dispatcher, the
provider, receipts and outcome events), marked `is_test` so that no campaign counts it.

Refused, before anything is stored: a number that is no mobile (`invalid_phone`), a number on the partner's opt-out
ledger (`opted_out`: a STOP outranks a marketer's test), and a person who sent `TEST_SENDS_PER_HOUR` tests in the last
hour (`test_send_limited`, with Retry-After). The limit is counted in the database under a transaction lock per
(partner, person), so every instance shares it and sends at once cannot overshoot it.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from contracts.envelope import Envelope
from contracts.sms import SendSms
from notifier.consumers import claimed_of
from notifier.dispatcher import Dispatcher
from notifier.domain import (
    TEST_SEND_WINDOW,
    InvalidPhone,
    Message,
    MessageStatus,
    encoding_of,
    normalized_mobile,
    segment_count,
    wait_before_test_send,
)
from notifier.events import SOURCE, message_id_of
from notifier.repository import Claimed, DispatchQueue, MessageRepository, NewMessage, insert_messages
from servicekit.errors import FieldError, InvalidRequest, TooManyRequests
from servicekit.outbox import UnitOfWork, unit_of_work
from servicekit.tracing import trace_headers

TEST_ID = "test-send"  # the order and customer of a test send, and its campaign when none is named
TEST_TTL = timedelta(hours=1)  # a test that cannot go out within the hour is no use to the marketer waiting for it


@dataclass(frozen=True)
class TestSendRequest:
    __test__ = False  # not a test class, whatever pytest thinks of its name

    phone: str
    text: str
    sender: str | None
    campaign_id: str | None


@dataclass
class TestSends:
    """The test sends of one partner's people."""

    __test__ = False

    pool: asyncpg.Pool
    dispatcher: Dispatcher
    per_hour: int

    async def send(self, partner_id: str, actor: str, request: TestSendRequest) -> Message:
        """Store the test message and start its first attempt in one transaction, then send it."""
        phone = _mobile_or_refuse(request.phone)
        started: list[tuple[Claimed, int]] = []
        work: UnitOfWork | None = None
        try:
            async with unit_of_work(self.pool) as work:
                message, started = await self._record(work, partner_id, actor, phone, request)
        finally:
            # Committed: the attempt exists before its provider call. Otherwise the room it took is given back.
            committed = work is not None and work.committed
            (self.dispatcher.launch if committed else self.dispatcher.release)(started)
        if not started:  # no room in flight now, or older messages wait: the dispatcher takes it in its turn
            self.dispatcher.waiting()
            self.dispatcher.wake.set()
        return message

    async def _record(
        self, work: UnitOfWork, partner_id: str, actor: str, phone: str, request: TestSendRequest
    ) -> tuple[Message, list[tuple[Claimed, int]]]:
        repo = MessageRepository(work.conn, partner_id)
        await repo.lock_test_sends_of(actor)
        if await DispatchQueue(work.conn).opted_out([(partner_id, phone)]):
            raise InvalidRequest(
                [FieldError(location="body", field="phone", message=f"{phone} opted out", type="opted_out")],
                detail=f"{phone} is on the opt-out ledger: it gets no SMS, tests included",
                code="opted_out",
            )
        now = datetime.now(UTC)
        wait = wait_before_test_send(await repo.test_sends_since(actor, now - TEST_SEND_WINDOW), per_hour=self.per_hour,
                                     now=now)  # fmt: skip
        if wait is not None:
            retry_after_s = math.ceil(wait.total_seconds())
            raise TooManyRequests(
                f"{self.per_hour} test sends an hour at most; the next one is possible in {retry_after_s} s",
                retry_after_s=retry_after_s,
                code="test_send_limited",
                limit=self.per_hour,
                retry_at=(now + timedelta(seconds=retry_after_s)).isoformat(),
            )
        new = new_test_message(partner_id, phone, request, now)
        message = (await insert_messages(work.conn, [new]))[new.message_id]
        await repo.record_test_send(actor, message.message_id, now)
        started = await self.dispatcher.start_in(work.conn, [claimed_of(new, message)])
        if started:
            message = message.model_copy(update={"status": MessageStatus.SENDING, "attempts": 1})
        return message, started


def _mobile_or_refuse(phone: str) -> str:
    try:
        return normalized_mobile(phone.strip())
    except InvalidPhone as exc:
        error = FieldError(location="body", field="phone", message=str(exc), type="invalid_phone")
        raise InvalidRequest([error], code="invalid_phone") from exc


def new_test_message(partner_id: str, phone: str, request: TestSendRequest, now: datetime) -> NewMessage:
    """The message of a test send, due now; its command (what a dead letter would carry) says `is_test`."""
    send_sms_id = f"test-{uuid.uuid4()}"  # every test is a new SMS, never a repeat of an earlier one
    command = SendSms(
        idempotency_key=send_sms_id,
        partner_id=partner_id,
        campaign_id=request.campaign_id or TEST_ID,
        order_id=TEST_ID,
        customer_id=TEST_ID,
        phone=phone,
        text=request.text,
        sender=request.sender,
        requested_at=now,
        expires_at=now + TEST_TTL,
        transactional=True,  # the marketer's own phone: no customer's marketing consent is asked (opt-outs still hold)
        is_test=True,
    )
    envelope = Envelope.wrap(command, source=SOURCE, partner_id=partner_id, event_id=send_sms_id)
    encoding = encoding_of(command.text)
    return NewMessage(
        message_id=message_id_of(partner_id, send_sms_id),
        partner_id=partner_id,
        send_sms_id=send_sms_id,
        campaign_id=command.campaign_id,
        order_id=command.order_id,
        customer_id=command.customer_id,
        phone=phone,
        text=command.text,
        sender=command.sender,
        transactional=command.transactional,
        encoding=str(encoding),
        segments=segment_count(command.text, encoding),
        status=MessageStatus.PENDING,
        failure_reason=None,
        failure_detail=None,
        requested_at=now,
        expires_at=command.expires_at,
        not_before=None,
        due_at=now,
        correlation_id=send_sms_id,
        command=envelope.to_bytes(),
        command_topic=None,
        command_partition=None,
        command_offset=None,
        trace_parent=trace_headers().get("traceparent"),
        is_test=True,
    )
