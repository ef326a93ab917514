"""The lifecycle every service shares, so a service's `app.py` only says what is its own.

Start-up order: migrations, database pool, idempotent producer, outbox relay, the retention clean-up
(`servicekit.retention`, in the background; its first round ten minutes later), the token verifier (the
revoked API clients read to the end of their topic first), status catalog (when
the service keeps one; it must have caught up before consumers start), the service's own start-up
hook (it registers its subscribers there, with the runtime in hand), then the FastStream broker.
Shutdown runs in reverse, so consumers stop before the pool they write to.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import operator
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import asyncpg
import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import HTMLResponse
from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.specification import AsyncAPI
from faststream.specification.asyncapi.site import get_asyncapi_html
from prometheus_client import REGISTRY
from uvicorn.config import STARTUP_FAILURE

from contracts.base import Contract
from contracts.envelope import envelope_type
from contracts.topics import Topic
from servicekit.auth import document_token_url
from servicekit.catalog import StatusCatalog
from servicekit.db import apply_migrations, create_pool, ping
from servicekit.errors import document_errors, install_error_handlers
from servicekit.http import ReadinessCheck, install_plumbing, refuse_unstorable_text
from servicekit.jwks import JWKS_PATH, Jwks, JwksVerifier, RevokedClients
from servicekit.kafka import broker_reachable
from servicekit.logs import configure_logging
from servicekit.outbox import OutboxRelay, idempotent_producer
from servicekit.retention import Purge, Retention, processed_events_purge
from servicekit.settings import ServiceSettings
from servicekit.tracing import setup_tracing

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What a running service holds; the service's routes reach it as `request.app.state.runtime`."""

    settings: ServiceSettings
    pool: asyncpg.Pool
    producer: AIOKafkaProducer
    relay: OutboxRelay
    broker: KafkaBroker
    catalog: StatusCatalog | None = None
    # Verifies the identity service's access tokens (its JWKS, and the revoked clients read from their topic).
    verifier: JwksVerifier | None = None
    revoked_clients: RevokedClients | None = None
    # What the service's start-up hook builds that its routes and hooks need (one object of the service's own
    # type: its use cases, its index...), read through `parts_of`, typed.
    parts: object | None = None


PartsT = TypeVar("PartsT")


def parts_of(runtime: Runtime, kind: type[PartsT]) -> PartsT:
    """The service's own parts, which its start-up hook put on the runtime, as the type it gave them."""
    if not isinstance(runtime.parts, kind):
        raise RuntimeError(f"the runtime holds {type(runtime.parts).__name__}, not {kind.__name__}: started yet?")
    return runtime.parts


def runtime_of(request: Request) -> Runtime:
    runtime = request.app.state.runtime
    assert isinstance(runtime, Runtime)
    return runtime


def parts_dependency(kind: type[PartsT]) -> Callable[[Request], PartsT]:
    """A FastAPI dependency giving a route the service's parts, typed:
    `Annotated[Kind, Depends(parts_dependency(Kind))]`."""

    def dependency(request: Request) -> PartsT:
        return parts_of(runtime_of(request), kind)

    return dependency


StartupHook = Callable[[Runtime], Awaitable[None]]
RuntimeCheck = Callable[[Runtime], Awaitable[bool]]


def make_broker(settings: ServiceSettings) -> KafkaBroker:
    """The service's FastStream broker: its consumers, and any direct publishing (idempotent, acks=all)."""
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=settings.service_name,
        enable_idempotence=True,
        logger=logging.getLogger(f"{settings.service_name}.broker"),
        # FastStream logs every consumed batch ("Received", "Processed"): detail for DEBUG, not a cost at INFO.
        log_level=logging.DEBUG,
        middlewares=[KafkaPrometheusMiddleware(registry=REGISTRY, app_name=settings.service_name)],
        description=f"Kafka topics of the {settings.service_name} service",
    )


def serve(settings: ServiceSettings, create_app: Callable[[Any], FastAPI]) -> None:
    """`python -m <service>`: JSON logs, tracing, then the HTTP server (which starts the consumers)."""
    configure_logging(settings.service_name, settings.log_level)
    setup_tracing(settings.service_name, settings.traces_exporter, settings.traces_file or None)
    app = create_app(settings)
    tune_garbage_collector(settings.gc_thresholds)
    server = QuietServer(uvicorn.Config(app, host=settings.http_host, port=settings.http_port, log_config=None))
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:  # as uvicorn.run: a service that could not start exits with uvicorn's status for it
        sys.exit(STARTUP_FAILURE)


class QuietServer(uvicorn.Server):
    """uvicorn's server without its tenth-of-a-second tick. uvicorn wakes ten times a second to see whether a signal
    asked it to stop (and on every tenth tick refreshes the Date header): at rest that was a third of a service's
    wake-ups (docs/performance.md, issue 34). This one ticks once a second, for the header, and a signal wakes it
    at once, so it stops as soon as uvicorn's would."""

    TICK_S = 1.0
    TICKS_PER_HEADER = 10  # uvicorn's `on_tick` refreshes the Date header when its counter is a multiple of this

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exit_asked = asyncio.Event()

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        counter = 0
        while not await self.on_tick(counter):
            counter += self.TICKS_PER_HEADER
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit_asked.wait(), self.TICK_S)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._loop is not None:  # a signal handler: wake the loop through its self-pipe
            self._loop.call_soon_threadsafe(self._exit_asked.set)


def tune_garbage_collector(thresholds: tuple[int, int, int]) -> None:
    """Freeze what start-up built (modules, classes, schemas: alive for good) so that no collection scans it
    again, and collect less often: most of a batch's objects are freed by reference counting anyway."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)


@dataclass(frozen=True)
class Publishes:
    """A topic the service writes (its outbox's events, or records it retries or dead-letters), for its AsyncAPI
    document: the relay publishes with aiokafka, so FastStream would otherwise list only what is consumed."""

    topic: Topic
    description: str
    contracts: tuple[type[Contract], ...] = ()  # none: the records of another topic, unchanged, with headers


@dataclass(frozen=True)
class ServiceSpec:
    title: str
    description: str
    migrations: Path
    routers: Sequence[APIRouter] = ()
    keeps_catalog: bool = False
    on_startup: StartupHook | None = None
    # Runs first at shutdown, before the consumers and the pool stop (e.g. to release a listening connection).
    on_shutdown: StartupHook | None = None
    install_handlers: Callable[[FastAPI], None] | None = None
    # More `/readyz` checks by name, e.g. an in-memory replica of the service's own that must be current.
    readiness: Mapping[str, RuntimeCheck] = field(default_factory=dict)
    # The service's retention rules (SQL in its repository); the shared processed_events rule is added to them.
    purges: Sequence[Purge] = ()
    # Every topic the service writes, for /asyncapi (the topics it consumes are listed by their subscribers).
    publishes: Sequence[Publishes] = ()


def create_service_app(settings: ServiceSettings, spec: ServiceSpec, broker: KafkaBroker | None = None) -> FastAPI:
    broker = broker or make_broker(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with _running(settings, spec, broker, app.state.token_verifier) as runtime:
            app.state.runtime = runtime
            yield

    app = FastAPI(
        title=spec.title,
        description=spec.description,
        version="1.0.0",
        lifespan=lifespan,
        dependencies=[Depends(refuse_unstorable_text)],
    )
    app.state.settings = settings
    app.state.token_verifier = token_verifier(settings)
    install_error_handlers(app)
    document_errors(app, amend=lambda schema: document_token_url(schema, settings))
    if spec.install_handlers:
        spec.install_handlers(app)
    for router in spec.routers:
        app.include_router(router)
    install_plumbing(app, max_body_bytes=settings.max_body_bytes, checks=_readiness_checks(app, spec))
    _declare_publishers(broker, settings, spec.publishes)
    _install_asyncapi(app, broker, spec)
    return app


def _declare_publishers(broker: KafkaBroker, settings: ServiceSettings, publishes: Sequence[Publishes]) -> None:
    """FastStream publisher objects, never used to send: they put the written topics into the AsyncAPI document."""
    for published in publishes:
        envelopes = [envelope_type(contract) for contract in published.contracts]
        schema = functools.reduce(operator.or_, envelopes) if envelopes else None
        broker.publisher(settings.topic(published.topic), description=published.description, schema=schema)


def _install_asyncapi(app: FastAPI, broker: KafkaBroker, spec: ServiceSpec) -> None:
    """AsyncAPI docs of the service's topics, next to the OpenAPI docs of its HTTP API."""

    def document() -> Any:
        return AsyncAPI(broker, title=spec.title, description=spec.description, version="1.0.0").to_specification()

    @app.get("/asyncapi.json", include_in_schema=False)
    async def asyncapi_json() -> Response:
        return Response(document().to_json(), media_type="application/json")

    @app.get("/asyncapi", include_in_schema=False)
    async def asyncapi_html() -> HTMLResponse:
        return HTMLResponse(get_asyncapi_html(document(), try_it_out_path=None))


def _readiness_checks(app: FastAPI, spec: ServiceSpec) -> dict[str, ReadinessCheck]:
    def runtime() -> Runtime:
        return app.state.runtime  # type: ignore[no-any-return]

    async def catalog_ready() -> bool:
        catalog = runtime().catalog
        return catalog is not None and catalog.ready.is_set()

    async def revocations_ready() -> bool:  # a service that missed a revocation would honour a revoked client
        revoked = runtime().revoked_clients
        return revoked is not None and revoked.ready.is_set()

    checks: dict[str, ReadinessCheck] = {
        "database": lambda: ping(runtime().pool),
        "broker": lambda: broker_reachable(runtime().producer),
        "revoked_clients": revocations_ready,
    }
    if spec.keeps_catalog:
        checks["status_catalog"] = catalog_ready
    for name, check in spec.readiness.items():
        checks[name] = _bound(check, runtime)
    return checks


def _bound(check: RuntimeCheck, runtime: Callable[[], Runtime]) -> ReadinessCheck:
    return lambda: check(runtime())


@asynccontextmanager
async def _running(
    settings: ServiceSettings, spec: ServiceSpec, broker: KafkaBroker, verifier: JwksVerifier
) -> AsyncIterator[Runtime]:
    await asyncio.to_thread(apply_migrations, settings.database_url, spec.migrations)
    pool = await create_pool(
        settings.database_url, settings.db_pool_min_size, settings.db_pool_max_size, outbox_slots=settings.outbox_slots
    )
    producer = idempotent_producer(settings.kafka_bootstrap_servers, settings.service_name)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(pool.close)
        await producer.start()
        stack.push_async_callback(producer.stop)
        relay = OutboxRelay(
            pool,
            producer,
            batch_size=settings.outbox_batch_size,
            poll_interval_s=settings.outbox_poll_interval_s,
            idle_poll_s=settings.outbox_idle_poll_s,
        )
        stack.push_async_callback(_stop_relay, relay, asyncio.create_task(relay.run(), name="outbox-relay"))
        retention = asyncio.create_task(_retention(settings, spec, pool).run(), name="retention")
        stack.push_async_callback(_cancel, retention)
        runtime = Runtime(
            settings=settings, pool=pool, producer=producer, relay=relay, broker=broker, verifier=verifier
        )
        await _follow_revocations(runtime, stack)
        if spec.keeps_catalog:
            runtime.catalog = StatusCatalog(
                settings.kafka_bootstrap_servers,
                settings.topic(Topic.STATUS_DEFINITIONS),
                settings.service_name,
                sync_timeout_s=settings.catalog_sync_timeout_s,
            )
            await runtime.catalog.start()
            stack.push_async_callback(runtime.catalog.stop)
            await runtime.catalog.ready.wait()
        if spec.on_startup:
            await spec.on_startup(runtime)
        await broker.start()
        stack.push_async_callback(broker.stop)
        if spec.on_shutdown:
            stack.push_async_callback(spec.on_shutdown, runtime)
        yield runtime


def token_verifier(settings: ServiceSettings) -> JwksVerifier:
    """The identity service's tokens: its JWKS, fetched when the first token arrives (so an app verifies even before
    its lifespan runs, as in-process tests use it); the lifespan adds the revoked clients (`_follow_revocations`)."""
    jwks = Jwks(settings.token_issuer.rstrip("/") + JWKS_PATH, max_age_s=settings.token_jwks_max_age_s)
    return JwksVerifier(jwks, issuer=settings.token_issuer, audience=settings.token_audience)


async def _follow_revocations(runtime: Runtime, stack: contextlib.AsyncExitStack) -> None:
    """Every revoked client, read before the service answers, so that none of them is honoured after a restart."""
    settings, verifier = runtime.settings, runtime.verifier
    assert verifier is not None
    stack.push_async_callback(verifier.close)
    revoked = RevokedClients(
        settings.kafka_bootstrap_servers, settings.topic(Topic.CLIENT_REVOCATIONS), f"{settings.service_name}-revoked"
    )
    await revoked.start()
    stack.push_async_callback(revoked.stop)
    await revoked.ready.wait()
    runtime.revoked_clients = revoked
    verifier.follow(revoked)


def _retention(settings: ServiceSettings, spec: ServiceSpec, pool: asyncpg.Pool) -> Retention:
    shared = processed_events_purge(timedelta(days=settings.processed_events_retention_days))
    return Retention(
        pool,
        [shared, *spec.purges],
        interval_s=settings.retention_interval_s,
        batch_size=settings.retention_batch_size,
        pause_s=settings.retention_pause_s,
        lock_timeout_ms=settings.retention_lock_timeout_ms,
    )


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _stop_relay(relay: OutboxRelay, task: asyncio.Task[None], grace_s: float = 10.0) -> None:
    relay.stop()
    try:
        await asyncio.wait_for(asyncio.shield(task), grace_s)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
