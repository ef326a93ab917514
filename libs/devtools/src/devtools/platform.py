"""The six services (and the console, when a test starts it) as separate processes on real Kafka and PostgreSQL,
for end-to-end tests.

Each platform gets its own topic prefix, its own databases and free ports, so several can share
one broker and one server. Processes can be killed with SIGKILL and started again, as in a crash.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from devtools.infra import ensure_topics
from devtools.launch import ServiceProcess, start_preloaded, start_subprocess
from devtools.tokens import IdentityTokens

SERVICES = ("status-registry", "orders", "campaigns", "notifier", "identity", "webhooks")
ISSUER = "identity"  # signs the access tokens; its address is their `iss`, where the verifiers find its JWKS
CONSOLE = "console"
APPS = (*SERVICES, CONSOLE)  # each has a database of its own
# The console's setting for the API of each service it calls (console.settings; the deployables set them too:
# docker-compose.yml and the Helm chart's ConfigMap, checked by tests/test_compose.py and tests/test_deploy.py).
CONSOLE_BACKENDS = {
    "REGISTRY_URL": "status-registry",
    "ORDERS_URL": "orders",
    "CAMPAIGNS_URL": "campaigns",
    "NOTIFIER_URL": "notifier",
    "IDENTITY_URL": "identity",
    "WEBHOOKS_URL": "webhooks",
}


@dataclass(frozen=True)
class Infrastructure:
    kafka_bootstrap: str
    postgres_dsn: str  # server-level DSN, database "postgres"
    origin: str


def database_dsn(server_dsn: str, database: str) -> str:
    base = server_dsn.rsplit("/", 1)[0] if server_dsn.count("/") > 2 else server_dsn
    return f"{base}/{database}"


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Ports handed out lie below the kernel's ephemeral range. A port the kernel picked for `bind(0)` stays in that
# range once the probe closes, so any outgoing connection (a Kafka client, httpx) could take it before the
# service binds it: CI saw "[Errno 98] address already in use" that way. Below the range only our own listeners
# bind. Each pytest-xdist worker counts through its own slice of the window, so two workers never hand out the
# same port.
_PORT_WINDOW = 12_000


def _port_slice() -> range:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    size = _PORT_WINDOW // max(workers, 1)
    first = _ephemeral_low() - _PORT_WINDOW + worker * size
    return range(first, first + size)


def _port_candidates(ports: range) -> Iterator[int]:
    start = random.randrange(len(ports))
    return (ports[(start + step) % len(ports)] for step in itertools.count())


_PORTS = _port_slice()
_candidates = _port_candidates(_PORTS)


def free_port() -> int:
    """A port no one listens on now and no outgoing connection will take (see _port_slice)."""
    for _, port in zip(_PORTS, _candidates, strict=False):  # each port of the slice once at most
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


@dataclass
class Platform:
    infrastructure: Infrastructure
    workdir: Path
    prefix: str = field(default_factory=lambda: f"e{uuid.uuid4().hex[:8]}.")
    ports: dict[str, int] = field(default_factory=lambda: {name: free_port() for name in APPS})
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    # Tests fork each process from a server that imported the services once (devtools.launch); the bench does not.
    preloaded: bool = False
    _sms_counted: tuple[int, int] = field(default=(0, 0), init=False, repr=False)  # bytes of the SMS file read, lines

    @property
    def sms_file(self) -> Path:
        return self.workdir / "sms.jsonl"

    def database(self, service: str) -> str:
        return f"{self.prefix.strip('.')}_{service.replace('-', '_')}"

    def env(self, service: str) -> dict[str, str]:
        return (
            os.environ
            | {
                "HTTP_PORT": str(self.ports[service]),
                "DATABASE_URL": database_dsn(self.infrastructure.postgres_dsn, self.database(service)),
                "KAFKA_BOOTSTRAP_SERVERS": self.infrastructure.kafka_bootstrap,
                "KAFKA_TOPIC_PREFIX": self.prefix,
                "CONSUMER_GROUP": f"{self.prefix}{service}",
                "SMS_EVENTS_CONSUMER_GROUP": f"{self.prefix}campaigns.sms-events",
                "UNKNOWN_STATUS_RETRY_DELAYS_S": "[0.5, 1, 2]",
                "OUTBOX_POLL_INTERVAL_S": "0.3",
                "CONSOLE_OUTBOX_FILE": str(self.sms_file),
                "WEBHOOKS_ALLOW_PRIVATE_TARGETS": "true",  # the tests' receivers listen on 127.0.0.1
                "TRACES_EXPORTER": "none",
                "LOG_LEVEL": "WARNING",
                "PYTHONUNBUFFERED": "1",
            }
            | (self.console_env() if service == CONSOLE else {})
            | ({"ORDERS_URL": self.url("orders")} if service == "campaigns" else {})  # the backtest reads orders
            | {"TOKEN_ISSUER": self.url(ISSUER)}  # every service verifies identity's tokens with its JWKS
            | self.extra_env
        )

    def console_env(self) -> dict[str, str]:
        """The console calls the APIs of the services it shows (the first instance of each)."""
        return {variable: self.url(service) for variable, service in CONSOLE_BACKENDS.items()}

    async def create(self) -> None:
        await ensure_topics(self.infrastructure.kafka_bootstrap, self.prefix)
        admin = await asyncpg.connect(self.infrastructure.postgres_dsn)
        try:
            for service in APPS:
                await admin.execute(f'CREATE DATABASE "{self.database(service)}"')
        finally:
            await admin.close()

    async def drop(self) -> None:
        admin = await asyncpg.connect(self.infrastructure.postgres_dsn)
        try:
            for service in APPS:
                await admin.execute(f'DROP DATABASE IF EXISTS "{self.database(service)}" WITH (FORCE)')
        finally:
            await admin.close()

    def start(self, service: str, instance: str | None = None) -> None:
        """Start `service`; `instance` names a further process of it (e.g. "orders.2": a port of its own, the same
        database and consumer groups), which `kill`, `wait_ready` and `url` then take as the name."""
        name = instance or service
        self.ports.setdefault(name, free_port())
        env = self.env(service) | {"HTTP_PORT": str(self.ports[name])}
        start = start_preloaded if self.preloaded else start_subprocess
        self.processes[name] = start(service.replace("-", "_"), env, self.workdir / f"{name}.log")

    def instances(self, service: str) -> list[str]:
        """The names of the running processes of `service`: itself and its further instances ("orders.2")."""
        return [name for name in self.processes if name == service or name.startswith(f"{service}.")]

    def kill(self, service: str) -> None:
        """SIGKILL: no shutdown code runs, exactly like a crash."""
        process = self.processes.pop(service)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        """The end of a test or a bench: SIGKILL, since nothing the processes hold matters any more (their databases
        are dropped and their topics deleted next) and a graceful stop cost seconds per platform (consumers leaving
        their groups, the relays' grace, open keep-alive connections)."""
        for process in self.processes.values():
            process.kill()
        for process in self.processes.values():
            process.wait(timeout=15)
        self.processes.clear()

    async def wait_ready(self, *services: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient() as client:
            for service in services or SERVICES:
                while True:
                    process = self.processes[service]
                    if process.poll() is not None:
                        raise RuntimeError(f"{service} exited ({process.returncode}):\n{self.log_tail(service)}")
                    try:
                        if (await client.get(f"{self.url(service)}/readyz", timeout=2)).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{service} not ready in {timeout_s}s:\n{self.log_tail(service)}")
                    await asyncio.sleep(0.2)

    def log_tail(self, service: str, lines: int = 30) -> str:
        path = self.workdir / f"{service}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def client(self, service: str, partner: str, scopes: tuple[str, ...] = ("read", "write")) -> httpx.AsyncClient:
        """An HTTP client of `service` with a token of `partner` that identity issued to the console (its own
        client); `scopes` as in `devtools.tokens.scopes_of` (`read`, `write` or scope names)."""
        auth = self.tokens.auth(partner, scopes)
        return httpx.AsyncClient(base_url=self.url(service), auth=auth, timeout=10)

    @property
    def tokens(self) -> IdentityTokens:
        """Identity's tokens, from any of its running instances (a test may have killed the first)."""
        return IdentityTokens(self.url(self.instances(ISSUER)[0]))

    def sent_count(self) -> int:
        """How many SMS the console provider handed over. Only what was appended since the last call is read: the
        bench polls this every 50 ms while a phase drains, and rereading the whole file (megabytes by the fixed
        rates) took CPU from the platform it measures, where the floor's count is a broker request."""
        if not self.sms_file.exists():
            return 0
        offset, lines = self._sms_counted
        with self.sms_file.open("rb") as handle:
            handle.seek(offset)
            appended = handle.read()
        complete = appended.rfind(b"\n") + 1  # a line still being written is counted once it is whole
        self._sms_counted = (offset + complete, lines + appended.count(b"\n"))
        return self._sms_counted[1]

    def sent_sms(self) -> list[dict[str, Any]]:
        """What the console provider handed over, one JSON object per SMS."""
        if not self.sms_file.exists():
            return []
        return [json.loads(line) for line in self.sms_file.read_text().splitlines() if line.strip()]


@asynccontextmanager
async def running(
    infrastructure: Infrastructure,
    workdir: Path,
    services: Sequence[str] = SERVICES,
    extra_env: Mapping[str, str] | None = None,
) -> AsyncIterator[Platform]:
    """`services` running as processes and ready (a test's: forked from the preloaded server); stopped and their
    databases dropped after."""
    platform = Platform(infrastructure, workdir, extra_env=dict(extra_env or {}), preloaded=True)
    await platform.create()
    try:
        for service in services:
            platform.start(service)
        await platform.wait_ready(*services)
        yield platform
    finally:
        platform.stop_all()
        await platform.drop()
