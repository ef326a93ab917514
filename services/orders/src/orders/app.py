"""Wiring of the orders service: consumers of upstream events, the REST API, the outbox relay."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from contracts.orders import OrderStatusChanged
from contracts.topics import Topic
from orders.api import analytics_router, install_error_handlers, router
from orders.consumers import InboundConsumer, RetryPolicy
from orders.past_changes import router as past_changes_router
from orders.repository import retention_purges
from orders.services import OrderService
from orders.settings import OrdersSettings
from servicekit.app import Publishes, Runtime, ServiceSpec, StartupHook, create_service_app, serve
from servicekit.consumer import DeadLetters, batch_subscriber

PUBLISHES = (
    Publishes(
        Topic.ORDER_STATUS_CHANGED,
        "One OrderStatusChanged per changed status type, through the outbox; key {partner}:{order_id}",
        (OrderStatusChanged,),
    ),
    Publishes(Topic.ORDERS_INBOUND_RETRY, "Upstream records to try again later (unknown status or order yet)"),
    Publishes(Topic.ORDERS_INBOUND_DLQ, "Refused upstream records, the reason in dlq-* headers"),
)


def _startup(settings: OrdersSettings) -> StartupHook:
    async def start(runtime: Runtime) -> None:
        assert runtime.catalog is not None
        service = OrderService(
            runtime.pool,
            runtime.catalog,
            settings.topic_status_changed,
            request_lock_timeout_s=settings.request_lock_timeout_s,
        )
        runtime.parts = service
        dead_letters = DeadLetters(runtime.producer, settings.topic_inbound_dlq, settings.consumer_group)
        inbound = InboundConsumer(
            service,
            dead_letters,
            runtime.producer,
            settings.topic_inbound_retry,
            max_bytes=settings.max_inbound_bytes,
            retry=RetryPolicy(settings.unknown_status_retry_delays_s),
        )
        batch_subscriber(
            runtime.broker,
            settings.topic_inbound,
            settings.consumer_group,
            inbound,
            dead_letters,
            max_records=settings.consumer_max_records,
            batching=settings.batching,
            title="orders.inbound",
        )
        # A separate group for the retry topic: its waits never hold up fresh upstream events.
        batch_subscriber(
            runtime.broker,
            settings.topic_inbound_retry,
            f"{settings.consumer_group}-retry",
            inbound,
            dead_letters,
            max_records=50,
            batching=settings.batching,
            title="orders.inbound.retry",
        )

    return start


def create_app(settings: OrdersSettings | None = None) -> FastAPI:
    settings = settings or OrdersSettings()
    spec = ServiceSpec(
        title="Orders",
        description="Orders with three status types: upstream events and REST in, OrderStatusChanged out; analytics.",
        migrations=Path(__file__).parent / "migrations",
        routers=[router, analytics_router, past_changes_router],
        keeps_catalog=True,
        on_startup=_startup(settings),
        install_handlers=install_error_handlers,
        purges=retention_purges(timedelta(hours=settings.idempotency_key_retention_hours)),
        publishes=PUBLISHES,
    )
    return create_service_app(settings, spec)


def main() -> None:
    serve(OrdersSettings(), create_app)


if __name__ == "__main__":
    main()
