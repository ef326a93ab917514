"""Wiring of the registry: database, outbox relay, HTTP API. No logic lives here."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from servicekit.app import ServiceSpec, create_service_app, serve
from status_registry.api import install_error_handlers, router
from status_registry.settings import RegistrySettings

SPEC = ServiceSpec(
    title="Status registry",
    description="Each partner's order statuses of three types (general, delivery, payment).",
    migrations=Path(__file__).parent / "migrations",
    routers=[router],
    install_handlers=install_error_handlers,
)


def create_app(settings: RegistrySettings | None = None) -> FastAPI:
    return create_service_app(settings or RegistrySettings(), SPEC)


def main() -> None:
    serve(RegistrySettings(), create_app)


if __name__ == "__main__":
    main()
