from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import smpp34
import uvicorn
from aiokafka import AIOKafkaProducer, ConsumerRecord
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from contracts.envelope import Envelope, decode_any
from contracts.sms import SendSms, SmsDelivered, SmsDispatched, SmsFailed, send_sms_id
from devtools.platform import free_port
from devtools.pytest_plugin import ClientFactory, Infrastructure, partner_clients, read_topic, wait_until
from notifier.app import create_app
from notifier.providers.base import Accepted, OutgoingSms, Provider
from notifier.settings import NotifierSettings
from servicekit.outbox import idempotent_producer

PHONE = "+79161234567"  # a Russian mobile number


@pytest.fixture
def notifier_settings(
    infrastructure: Infrastructure, database: str, topic_prefix: str, tmp_path: Path
) -> NotifierSettings:
    return NotifierSettings(
        database_url=database,
        kafka_bootstrap_servers=infrastructure.kafka_bootstrap,
        kafka_topic_prefix=topic_prefix,
        outbox_poll_interval_s=0.2,
        dispatch_poll_interval_s=0.2,
        console_outbox_file=tmp_path / "sms.jsonl",
        retry_base_s=0.2,
        retry_max_s=1.0,
        provider_rate_per_s=1000,
    )


@pytest.fixture
async def notifier_app(notifier_settings: NotifierSettings) -> AsyncIterator[FastAPI]:
    app = create_app(notifier_settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def producer(infrastructure: Infrastructure) -> AsyncIterator[AIOKafkaProducer]:
    producer = idempotent_producer(infrastructure.kafka_bootstrap, "notifier-tests")
    await producer.start()
    yield producer
    await producer.stop()


def command(
    *,
    partner: str = "acme",
    phone: str = PHONE,
    text: str = "Your order is on its way",
    event: str | None = None,
    campaign: str = "campaign-1",
    order: str = "order-1",
    expires_in: timedelta = timedelta(hours=1),
    not_before: datetime | None = None,
    requested_at: datetime | None = None,
    sms_consent: bool | None = True,
    **extra: Any,
) -> Envelope[SendSms]:
    """A SendSms envelope as the campaigns service would emit it (deterministic id per campaign + event); by
    default a marketing SMS to a customer who consented."""
    key = send_sms_id(campaign, event or str(uuid.uuid4()))
    requested = requested_at or datetime.now(UTC)
    data = SendSms(
        idempotency_key=key,
        partner_id=partner,
        campaign_id=campaign,
        order_id=order,
        customer_id="customer-1",
        phone=phone,
        text=text,
        requested_at=requested,
        expires_at=requested + expires_in,
        not_before=not_before,
        sms_consent=sms_consent,
        **extra,
    )
    return Envelope.wrap(data, source="/tests", partner_id=partner, event_id=key)


class Kit:
    """What service tests share: build and publish commands, read the database, the topics and the console file."""

    def __init__(self, settings: NotifierSettings, producer: AIOKafkaProducer) -> None:
        self.settings = settings
        self.producer = producer
        self.command = command

    async def publish(self, *envelopes: Envelope[SendSms], raw: bytes | None = None) -> None:
        topic = self.settings.topic_send_sms
        futures = [await self.producer.send(topic, e.to_bytes(), key=e.key()) for e in envelopes]
        if raw is not None:
            futures.append(await self.producer.send(topic, raw, key=b"acme:bad"))
        for future in futures:
            await future

    async def rows(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.settings.database_url)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    async def status(self, send_id: str) -> str | None:
        found = await self.rows("SELECT status FROM messages WHERE send_sms_id = $1", send_id)
        return found[0]["status"] if found else None

    async def wait_status(self, send_id: str, *statuses: str, timeout_s: float = 15) -> None:
        async def reached() -> bool:
            return await self.status(send_id) in statuses

        await wait_until(reached, timeout_s=timeout_s, what=f"{send_id} to be {'/'.join(statuses)}")

    async def events(self, *, at_least: int = 0, timeout_s: float = 15) -> list[Envelope[Any]]:
        """The decoded events on notifier.sms-events.v1, waiting until there are `at_least`."""
        found: list[Envelope[Any]] = []

        async def enough() -> bool:
            nonlocal found
            records = await read_topic(self.settings.kafka_bootstrap_servers, self.settings.topic_sms_events)
            found = [decode_any(r.value or b"", SMS_EVENTS) for r in records]
            return len(found) >= at_least

        await wait_until(enough, timeout_s=timeout_s, what=f"{at_least} sms events")
        return found

    async def dead_letters(self) -> list[ConsumerRecord[bytes, bytes]]:
        return await read_topic(self.settings.kafka_bootstrap_servers, self.settings.topic_send_sms_dlq)

    def console_ids(self) -> list[str]:
        path = self.settings.console_outbox_file
        if not path.exists():
            return []
        return [json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()]


SMS_EVENTS = (SmsDispatched, SmsFailed, SmsDelivered)


@pytest.fixture
def kit(notifier_settings: NotifierSettings, producer: AIOKafkaProducer) -> Kit:
    return Kit(notifier_settings, producer)


Client = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def client_for(notifier_app: FastAPI, notifier_settings: NotifierSettings) -> AsyncIterator[ClientFactory]:
    """`client_for("acme")`: an HTTP client holding a token of partner acme (scopes as given)."""
    async with partner_clients(notifier_app, notifier_settings) as make:
        yield make


class Gateway:
    """A real HTTP SMS gateway on loopback that fails on demand; it de-duplicates on Idempotency-Key.

    `plan[phone]` is a list of behaviours used one per request: "ok", "500", "503", "400", "slow"
    (takes the SMS, then answers after the client's timeout), "429:<seconds>" (Retry-After).
    """

    TOKEN = "gateway-test-token"

    def __init__(self) -> None:
        self.plan: dict[str, list[str]] = {}
        self.requests: list[tuple[str, float, str]] = []  # (idempotency key, monotonic time, answer)
        self.sent: dict[str, str] = {}  # idempotency key -> gateway message id: what reached a handset
        self.handset: Counter[str] = Counter()  # idempotency key -> SMS actually sent
        self.bodies: dict[str, dict[str, Any]] = {}
        self.slow_s = 1.5
        self.app = FastAPI()
        self.app.post("/v1/sms")(self._receive)
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.url = ""

    async def _receive(self, request: Request) -> Response:
        key = request.headers.get("Idempotency-Key", "")
        if request.headers.get("Authorization") != f"Bearer {self.TOKEN}":
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        body = await request.json()
        steps = self.plan.get(body["to"], [])
        step = steps.pop(0) if steps else "ok"
        self.requests.append((key, time.monotonic(), step))
        if step.startswith("429"):
            return JSONResponse({"error": "slow down"}, status_code=429, headers={"Retry-After": step.split(":")[1]})
        if step in ("500", "503", "400"):
            return JSONResponse({"error": step}, status_code=int(step))
        if key not in self.sent:  # the gateway's own idempotency: one SMS per key
            self.sent[key] = f"gw-{len(self.sent) + 1}"
            self.handset[key] += 1
            self.bodies[key] = body
        if step == "slow":
            await asyncio.sleep(self.slow_s)
        return JSONResponse({"message_id": self.sent[key]}, status_code=202)

    async def start(self) -> None:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        for _ in range(100):
            if self._server.started:
                break
            await asyncio.sleep(0.05)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/v1/sms"

    async def stop(self) -> None:
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        await asyncio.wait_for(self._task, 10)


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    server = Gateway()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def http_settings(notifier_settings: NotifierSettings, gateway: Gateway) -> NotifierSettings:
    return notifier_settings.model_copy(
        update={
            "notifier_provider": "http",
            "http_provider_url": gateway.url,
            "http_provider_token": Gateway.TOKEN,
            "http_provider_timeout_s": 0.5,
        }
    )


class SimulatedCrash(BaseException):
    """Stands for the process dying: not an Exception, so nothing in the service handles it."""


class CrashAround(Provider):
    """A real provider with the process "dying" just before or just after the provider accepted."""

    def __init__(self, inner: Provider, when: str) -> None:
        self.inner = inner
        self.name = inner.name
        self.resend_is_safe = inner.resend_is_safe
        self.when = when
        self.crashed = asyncio.Event()

    async def start(self, on_reports: Any, on_inbound: Any) -> None:
        await self.inner.start(on_reports, on_inbound)

    async def stop(self) -> None:
        await self.inner.stop()

    async def send(self, sms: OutgoingSms) -> Accepted:
        if self.when == "before_send":
            self.crashed.set()
            raise SimulatedCrash
        await self.inner.send(sms)
        self.crashed.set()
        raise SimulatedCrash  # accepted, but the service never gets to record it

    async def lookup(self, sms: OutgoingSms) -> Accepted | None:
        return await self.inner.lookup(sms)

    def map_status(self, raw: str) -> Any:
        return self.inner.map_status(raw)


@pytest.fixture
def crash_around() -> type[CrashAround]:
    return CrashAround


class Smsc:
    """A real SMPP server (smpp34) on loopback: accepts, throttles or refuses submit_sm, sends receipts and MO.

    `plan[destination]` lists answers used one per submit_sm: "ok", "throttle", "refuse", "drop" (accept,
    then end the session). `auto_receipts` answers every accepted segment with a DELIVRD receipt.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.server = smpp34.Server("127.0.0.1", self.port, system_id="TestSMSC")
        self.plan: dict[str, list[str]] = {}
        self.submits: list[smpp34.SubmitSmEvent] = []
        self.sessions: dict[str, smpp34.Esme] = {}
        self.binds = 0
        self.auto_receipts = False
        self._task: asyncio.Task[None] | None = None
        self._count = 0

    async def start(self) -> None:
        await self.server.start()
        self._task = asyncio.create_task(self._serve())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        for esme in self.sessions.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(esme.unbind(), 2)
        await self.server.stop()

    async def _serve(self) -> None:
        while True:
            event = await self.server.next()
            if isinstance(event, smpp34.Esme):
                self.binds += 1
                self.sessions[event.session_id] = event
            elif isinstance(event, smpp34.Unbound):
                self.sessions.pop(event.session_id, None)
            elif isinstance(event, smpp34.SubmitSmEvent):
                await self._answer(event)

    async def _answer(self, event: smpp34.SubmitSmEvent) -> None:
        steps = self.plan.get(event.destination_addr, [])
        step = steps.pop(0) if steps else "ok"
        if step == "throttle":
            event.reject(smpp34.ESME_RTHROTTLED)
            return
        if step == "refuse":
            event.reject(smpp34.ESME_RINVDSTADR)
            return
        self._count += 1
        message_id = f"smsc-{self._count}"
        event.accept(message_id)
        self.submits.append(event)
        esme = self.sessions.get(event.session_id)
        if step == "drop" and esme is not None:
            # After the response is on its way: a session lost before it would leave the outcome unknown.
            await asyncio.sleep(0.3)
            self.sessions.pop(event.session_id, None)
            await esme.unbind()
        elif self.auto_receipts and esme is not None:
            await self.receipt(esme, event, message_id, "DELIVRD")

    async def receipt(self, esme: smpp34.Esme, event: smpp34.SubmitSmEvent, message_id: str, stat: str) -> None:
        text = f"id:{message_id} sub:001 dlvrd:001 submit date:2603011200 done date:2603011201 stat:{stat} err:000"
        await esme.deliver_sm(
            event.source_addr,
            text.encode(),
            source_addr=event.destination_addr,
            esm_class=0x04,
        )

    async def mobile_originated(self, phone: str, text: str) -> None:
        (esme,) = self.sessions.values()
        await esme.deliver_sm("Notifier", text.encode("utf-16-be"), source_addr=phone.lstrip("+"), data_coding=8)


@pytest.fixture
async def smsc() -> AsyncIterator[Smsc]:
    server = Smsc()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def smpp_settings(notifier_settings: NotifierSettings, smsc: Smsc) -> NotifierSettings:
    return notifier_settings.model_copy(
        update={"notifier_provider": "smpp", "smpp_port": smsc.port, "smpp_submit_timeout_s": 2.0}
    )
