"""Wiring of webhooks: database, consumers, the dispatcher that sends, HTTP API. No logic lives here."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from pathlib import Path

import httpx
from fastapi import FastAPI

from servicekit.app import (
    Publishes,
    Runtime,
    RuntimeCheck,
    ServiceSpec,
    StartupHook,
    create_service_app,
    parts_of,
    serve,
)
from webhooks.api import WebhooksParts, router
from webhooks.consumers import SOURCES, subscribe
from webhooks.delivery import Dispatcher, Sender
from webhooks.domain import Clock, SystemClock
from webhooks.repository import retention_purges
from webhooks.settings import WebhooksSettings
from webhooks.targets import TargetGuard

PUBLISHES = tuple(
    Publishes(
        source.dead_letters, f"Records of {source.topic} the webhooks could not read, the reason in dlq-* headers"
    )
    for source in SOURCES
)


def delivery_client(settings: WebhooksSettings) -> httpx.AsyncClient:
    """The HTTP client of every delivery: no redirects (a 3xx is a failed attempt, never followed to wherever it
    points), no proxy or certificate settings from the environment, as many connections as requests in flight."""
    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        timeout=settings.delivery_timeout_s,
        limits=httpx.Limits(max_connections=settings.delivery_concurrency, keepalive_expiry=30),
    )


def _start(settings: WebhooksSettings, clock: Clock, tasks: list[asyncio.Task[None]]) -> StartupHook:
    async def start(runtime: Runtime) -> None:
        guard = TargetGuard(allow_private=settings.webhooks_allow_private_targets)
        client = delivery_client(settings)
        sender = Sender(client, guard, settings.delivery_timeout_s, settings.response_excerpt_bytes)
        dispatcher = Dispatcher(runtime.pool, settings, clock, sender)
        runtime.parts = WebhooksParts(guard=guard, clock=clock, dispatcher=dispatcher, client=client)
        subscribe(runtime.broker, settings, runtime.pool, runtime.producer, clock, dispatcher.wake)
        tasks.append(asyncio.create_task(dispatcher.run(), name="webhook-dispatcher"))

    return start


def _stop(tasks: list[asyncio.Task[None]]) -> StartupHook:
    async def stop(runtime: Runtime) -> None:
        parts = parts_of(runtime, WebhooksParts)
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        tasks.clear()
        await parts.dispatcher.stop()
        await parts.client.aclose()

    return stop


def _dispatching(tasks: list[asyncio.Task[None]]) -> RuntimeCheck:
    async def running(_: Runtime) -> bool:
        return bool(tasks) and not any(task.done() for task in tasks)

    return running


def create_app(settings: WebhooksSettings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or WebhooksSettings()
    tasks: list[asyncio.Task[None]] = []
    spec = ServiceSpec(
        title="Webhooks",
        description="Partners' webhook endpoints: platform events delivered to them signed (Standard Webhooks), "
        "retried on a schedule, in order per order, with a delivery log and resends.",
        migrations=Path(__file__).parent / "migrations",
        routers=[router],
        on_startup=_start(settings, clock or SystemClock(), tasks),
        on_shutdown=_stop(tasks),
        readiness={"dispatcher": _dispatching(tasks)},
        publishes=PUBLISHES,
        purges=retention_purges(timedelta(days=settings.message_retention_days)),
    )
    return create_service_app(settings, spec)


def main() -> None:
    serve(WebhooksSettings(), create_app)


if __name__ == "__main__":
    main()
