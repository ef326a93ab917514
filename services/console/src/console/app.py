"""Wiring of the console: its users' database, the backends, sessions, templates and the pages. No logic here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from console.backends import Backends, OpsKafka
from console.domain import LANGUAGES, Throttle
from console.pages import (
    account,
    admin,
    analytics,
    backtest,
    campaigns,
    messages,
    ops,
    orders,
    statuses,
    test_send,
    webhooks,
)
from console.services import Sessions, Users
from console.settings import ConsoleSettings
from console.web import (
    SecurityHeaders,
    ServerSessions,
    Templates,
    csrf_protected,
    install_page_handlers,
    storable_path,
)
from servicekit.app import serve
from servicekit.db import apply_migrations, create_pool, ping
from servicekit.http import install_probes

STATIC = Path(__file__).parent / "static"
PAGES = (account, statuses, backtest, campaigns, test_send, orders, analytics, messages, admin, webhooks, ops)


def create_app(settings: ConsoleSettings | None = None) -> FastAPI:
    settings = settings or ConsoleSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        migrations = Path(__file__).parent / "migrations"
        await asyncio.to_thread(apply_migrations, settings.database_url, migrations, plumbing=False)
        pool = await create_pool(settings.database_url, settings.db_pool_min_size, settings.db_pool_max_size)
        app.state.pool = pool
        throttle = Throttle(
            settings.sign_in_free_failures_per_account,
            settings.sign_in_free_failures_per_address,
            settings.sign_in_max_delay_s,
        )
        app.state.users = Users(pool, throttle, settings.sign_ins_kept_days)
        app.state.sessions = Sessions(pool, settings.session_idle_timeout_s, settings.session_max_age_s)
        app.state.backends = Backends(settings)
        app.state.kafka = OpsKafka(settings.kafka_bootstrap_servers)
        try:
            yield
        finally:
            await app.state.kafka.close()
            await app.state.backends.close()
            await pool.close()

    app = FastAPI(
        title="Partner console",
        description="The platform's screens: statuses, campaigns, orders, analytics, messages; ops for operators.",
        lifespan=lifespan,
        dependencies=[Depends(storable_path), Depends(csrf_protected)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.templates = Templates(LANGUAGES)
    app.add_middleware(ServerSessions)
    app.add_middleware(SecurityHeaders)  # added last, so outermost: on every answer, sessions' and static files' too
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:  # what a browser asks for before it reads a page's <link rel="icon">
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    for page in PAGES:
        app.include_router(page.router)
    install_page_handlers(app)
    install_probes(app, {"database": lambda: ping(app.state.pool)})
    return app


def main() -> None:
    serve(ConsoleSettings(), create_app)


if __name__ == "__main__":
    main()
