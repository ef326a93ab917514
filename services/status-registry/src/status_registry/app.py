"""Wiring of the registry: database, outbox relay, HTTP API. No logic lives here."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from servicekit.db import apply_migrations, create_pool, ping
from servicekit.http import install_plumbing
from servicekit.kafka import broker_reachable
from servicekit.logs import configure_logging
from servicekit.outbox import OutboxRelay, idempotent_producer

from status_registry.api import install_error_handlers, router
from status_registry.settings import RegistrySettings

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: RegistrySettings | None = None) -> FastAPI:
    settings = settings or RegistrySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(apply_migrations, settings.database_url, MIGRATIONS)
        pool = await create_pool(settings.database_url, settings.db_pool_min_size, settings.db_pool_max_size)
        producer = idempotent_producer(settings.kafka_bootstrap_servers, settings.service_name)
        await producer.start()
        relay = OutboxRelay(
            pool,
            producer,
            batch_size=settings.outbox_batch_size,
            poll_interval_s=settings.outbox_poll_interval_s,
        )
        relay_task = asyncio.create_task(relay.run(), name="outbox-relay")
        app.state.pool, app.state.producer, app.state.relay = pool, producer, relay
        try:
            yield
        finally:
            relay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay_task
            await producer.stop()
            await pool.close()

    app = FastAPI(
        title="Status registry",
        description="Each partner's order statuses of three types (general, delivery, payment).",
        version="1.0.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(router)
    install_plumbing(
        app,
        max_body_bytes=settings.max_body_bytes,
        checks={
            "database": lambda: ping(app.state.pool),
            "broker": lambda: broker_reachable(app.state.producer),
        },
    )
    return app


def main() -> None:
    settings = RegistrySettings()
    configure_logging(settings.service_name, settings.log_level)
    uvicorn.run(create_app(settings), host=settings.http_host, port=settings.http_port, log_config=None)


if __name__ == "__main__":
    main()
