"""`python -m servicekit.migrate <service>`: the migrate-only run a deployment's release Job uses."""

from __future__ import annotations

import asyncio
import os
import sys

import asyncpg
import pytest

from servicekit.migrate import migrations_folder, settings_class

SERVICES = ["status-registry", "orders", "campaigns", "notifier"]


async def run_migrate(service: str, database_url: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "servicekit.migrate",
        service,
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


async def applied_migrations(database_url: str) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT migration_id FROM _yoyo_migration ORDER BY migration_id")
        return [row["migration_id"] for row in rows]
    finally:
        await conn.close()


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_has_settings_and_migrations(service: str) -> None:
    assert settings_class(service)().service_name == service
    assert any(migrations_folder(service).glob("*.sql"))


async def test_migrate_applies_the_shared_and_the_service_migrations_once(database: str) -> None:
    # Two release Jobs racing (or a Job and a starting instance): yoyo's lock lets each migration apply once.
    results = await asyncio.gather(run_migrate("orders", database), run_migrate("orders", database))
    for returncode, output in results:
        assert returncode == 0, output

    expected = sorted(
        [p.stem for p in migrations_folder("orders").glob("*.sql")]
        + [p.stem for p in (migrations_folder("servicekit")).glob("*.sql")]
    )
    assert await applied_migrations(database) == expected
    conn = await asyncpg.connect(database)
    try:
        assert await conn.fetchval("SELECT to_regclass('public.outbox') IS NOT NULL")
    finally:
        await conn.close()

    returncode, output = await run_migrate("orders", database)
    assert returncode == 0, output
    assert await applied_migrations(database) == expected


async def test_migrate_fails_loudly_for_an_unknown_service(database: str) -> None:
    returncode, output = await run_migrate("no-such-service", database)
    assert returncode != 0
    assert "no_such_service" in output
