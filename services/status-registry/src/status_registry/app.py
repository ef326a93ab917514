"""Wiring of the registry: database, outbox relay, HTTP API. No logic lives here."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from contracts.status_events import StatusDefinitionArchived, StatusDefinitionUpserted
from contracts.topics import Topic
from servicekit.app import Publishes, Runtime, ServiceSpec, StartupHook, create_service_app, serve
from servicekit.consumer import DeadLetters, batch_subscriber
from status_registry.api import router
from status_registry.consumers import campaign_usage_processor
from status_registry.settings import RegistrySettings

PUBLISHES = (
    Publishes(
        Topic.STATUS_DEFINITIONS,
        "Every partner's status definitions (compacted; key partner:code): the newest version of each",
        (StatusDefinitionUpserted, StatusDefinitionArchived),
    ),
    Publishes(Topic.CAMPAIGN_STATUS_USAGE_REGISTRY_DLQ, "campaigns.status-usage.v1 records it could not read"),
)


def _subscribe(settings: RegistrySettings) -> StartupHook:
    async def start(runtime: Runtime) -> None:
        dlq = settings.topic(Topic.CAMPAIGN_STATUS_USAGE_REGISTRY_DLQ)
        dead_letters = DeadLetters(runtime.producer, dlq, settings.consumer_group)
        batch_subscriber(
            runtime.broker,
            settings.topic(Topic.CAMPAIGN_STATUS_USAGE),
            settings.consumer_group,
            campaign_usage_processor(runtime.pool, dead_letters),
            dead_letters,
            batching=settings.batching,
            title="campaigns.status-usage",
        )

    return start


def create_app(settings: RegistrySettings | None = None) -> FastAPI:
    settings = settings or RegistrySettings()
    spec = ServiceSpec(
        title="Status registry",
        description="Each partner's order statuses of three types (general, delivery, payment).",
        migrations=Path(__file__).parent / "migrations",
        routers=[router],
        on_startup=_subscribe(settings),
        publishes=PUBLISHES,
    )
    return create_service_app(settings, spec)


def main() -> None:
    serve(RegistrySettings(), create_app)


if __name__ == "__main__":
    main()
