"""pytest fixtures that give every test real Kafka and PostgreSQL, isolated from other tests.

Where the infrastructure comes from, in order: explicit environment variables
(`KAFKA_BOOTSTRAP_SERVERS` and `TEST_POSTGRES_DSN`), else the project's local infrastructure
(started when not running), else testcontainers when a Docker engine answers. When none works
the session fails with the reason: a real-infrastructure test is never skipped.
Each test that asks for them gets its own topic prefix (all topics created fresh) and its own database.
"""

from __future__ import annotations

import asyncio
import os
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer

from devtools import infra
from devtools.kafka_io import committed_offsets
from devtools.platform import Infrastructure, database_dsn
from devtools.tokens import TestIssuer
from servicekit.ops import read_topic
from servicekit.outbox import idempotent_producer
from servicekit.settings import ServiceSettings

__all__ = ["Infrastructure", "committed_offsets", "database_dsn", "fresh_database", "read_topic", "wait_until"]

_SUMMARY: list[str] = []
_SUMMARY_PROPERTY = "platform check"


@pytest.fixture
def summary(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """`summary("...")`: a line printed at the end of the run, under "platform checks" (shown even on success).

    Kept on the test's report (`user_properties`), which pytest-xdist carries from a worker to the process that
    prints the summary."""
    return lambda line: request.node.user_properties.append((_SUMMARY_PROPERTY, line))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown":
        _SUMMARY.extend(str(value) for name, value in report.user_properties if name == _SUMMARY_PROPERTY)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _SUMMARY:
        terminalreporter.section("platform checks")
        for line in _SUMMARY:
            terminalreporter.write_line(line)


_ISSUER: TestIssuer | None = None


def pytest_configure(config: pytest.Config) -> None:
    """The session's token issuer (`devtools.tokens.TestIssuer`): every service built in process verifies its tokens,
    through TOKEN_ISSUER, which its settings read from the environment. The e2e platform's processes are given the
    real identity service's address instead."""
    global _ISSUER
    _ISSUER = TestIssuer()
    os.environ["TOKEN_ISSUER"] = _ISSUER.url


def pytest_unconfigure(config: pytest.Config) -> None:
    if _ISSUER is not None:
        _ISSUER.close()


def token_issuer() -> TestIssuer:
    """The session's token issuer: tokens that in-process services accept."""
    assert _ISSUER is not None, "devtools.pytest_plugin is not loaded"
    return _ISSUER


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the real Kafka and PostgreSQL (through the `infrastructure` fixture, directly or
    not) as `infra`, so `make check` can run the rest alone: `pytest -m "not infra"`."""
    for item in items:
        if "infrastructure" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.infra)


def _from_environment() -> Infrastructure | None:
    bootstrap, dsn = os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), os.environ.get("TEST_POSTGRES_DSN")
    if bootstrap and dsn:
        return Infrastructure(bootstrap, dsn, "environment variables")
    return None


def _from_local_infra() -> Infrastructure:
    settings = infra.InfraSettings()
    infra.up(settings)
    return Infrastructure(infra.local_bootstrap(settings), infra.postgres_dsn(settings), "local infrastructure")


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def infrastructure() -> Iterator[Infrastructure]:
    found = _from_environment()
    if found is not None:
        yield found
        return
    try:
        yield _from_local_infra()
        return
    except Exception as local_error:
        if not _docker_answers():
            pytest.fail(
                f"no Kafka/PostgreSQL for the tests: local infrastructure failed ({local_error}) "
                "and no Docker engine answers for testcontainers",
                pytrace=False,
            )
    yield from _from_testcontainers()


def _from_testcontainers() -> Iterator[Infrastructure]:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer

    with KafkaContainer().with_kraft() as kafka, PostgresContainer("postgres:16-alpine") as pg:
        dsn = pg.get_connection_url(driver=None)
        asyncio.run(infra.ensure_topics(kafka.get_bootstrap_server()))
        yield Infrastructure(kafka.get_bootstrap_server(), dsn, "testcontainers")


@pytest.fixture
async def producer(infrastructure: Infrastructure) -> AsyncIterator[AIOKafkaProducer]:
    """An idempotent producer on the test broker (the services' own kind), as an upstream system would publish."""
    producer = idempotent_producer(infrastructure.kafka_bootstrap, "tests")
    await producer.start()
    yield producer
    await producer.stop()


@asynccontextmanager
async def fresh_topics(infrastructure: Infrastructure) -> AsyncIterator[str]:
    """A fresh namespace: every topic of the platform created anew under a unique prefix, deleted after."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    await infra.ensure_topics(infrastructure.kafka_bootstrap, prefix)
    yield prefix
    # Best effort: a slow deletion must not fail or stall the test that just passed.
    try:
        if not os.environ.get("KEEP_TOPICS"):
            await asyncio.wait_for(infra.delete_topics(infrastructure.kafka_bootstrap, prefix), 20)
    except Exception as exc:
        warnings.warn(f"could not delete the topics under {prefix}: {exc!r}", stacklevel=1)


@pytest.fixture
async def topic_prefix(infrastructure: Infrastructure) -> AsyncIterator[str]:
    """A topic namespace of the test's own (`fresh_topics`)."""
    async with fresh_topics(infrastructure) as prefix:
        yield prefix


@pytest.fixture(scope="module")
async def module_topic_prefix(infrastructure: Infrastructure) -> AsyncIterator[str]:
    """A topic namespace shared by a module's tests: for a module that starts its service once."""
    async with fresh_topics(infrastructure) as prefix:
        yield prefix


@pytest.fixture(scope="module")
async def module_database(infrastructure: Infrastructure) -> AsyncIterator[str]:
    """A database shared by a module's tests: for a module that starts its service once."""
    async with fresh_database(infrastructure) as dsn:
        yield dsn


@asynccontextmanager
async def fresh_database(infrastructure: Infrastructure) -> AsyncIterator[str]:
    """A fresh, empty database on the test server; dropped on leaving (for tests that need several)."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(infrastructure.postgres_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield database_dsn(infrastructure.postgres_dsn, name)
    finally:
        admin = await asyncpg.connect(infrastructure.postgres_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def database(infrastructure: Infrastructure) -> AsyncIterator[str]:
    """A fresh, empty database for this test; dropped afterwards."""
    async with fresh_database(infrastructure) as dsn:
        yield dsn


async def wait_until(condition: Callable[[], Awaitable[bool]], *, timeout_s: float = 15.0, what: str = "") -> None:
    """Poll `condition` until it holds; fail with `what` after `timeout_s`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or condition}")
        await asyncio.sleep(0.1)


ClientFactory = Callable[..., httpx.AsyncClient]


@asynccontextmanager
async def partner_clients(app: Any, settings: ServiceSettings) -> AsyncIterator[ClientFactory]:
    """`make("acme", scopes)`: in-process HTTP clients of `app`, each holding a token of that partner."""
    clients: list[httpx.AsyncClient] = []

    def make(partner: str = "acme", scopes: tuple[str, ...] = ("read", "write")) -> httpx.AsyncClient:
        token = token_issuer().token(partner, scopes)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url=f"http://{settings.service_name}",
            headers={"Authorization": f"Bearer {token}"},
        )
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            await client.aclose()
