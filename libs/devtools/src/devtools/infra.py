"""Local Kafka and PostgreSQL for development and tests: `python -m devtools.infra up|down|status|env`.

Where a Docker engine answers, the repo's docker-compose.yml runs both. Everywhere else (this project's CI
has no Docker engine) the project runs them itself:

* Kafka 4.1.1 in KRaft mode, single node: the broker's jars are copied once from Maven Central with Maven
  (infra/pom.xml) into the state folder and run with the local Java 17+, detached, one pid file.
* PostgreSQL from the Debian server binaries (package `postgresql`), one data directory, one database per
  service.

Everything is idempotent: `up` reuses what already runs (or anything else answering on the ports) and caches
every slow step (jar download, storage format, initdb), so a test fixture may call `up()` every session.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import fcntl
import hashlib
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.topics import TOPIC_SPECS, prefixed

KAFKA_VERSION = "4.1.1"  # keep in step with infra/pom.xml
SERVICE_DATABASES = ("status_registry", "orders", "campaigns", "notifier", "console")
LOCALHOST = "127.0.0.1"
PG_OS_USER = "postgres"  # PostgreSQL refuses to run as root; the Debian package creates this system user
PG_FALLBACK_ROOT = Path("/var/tmp/order-status-platform")
# Small-machine JVM flags: serial GC and C1 only start the broker fastest on 2 cores; no hsperfdata files.
JVM_FLAGS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData", "-Djava.awt.headless=true")
BROKER_START_TIMEOUT_S = 90.0
BROKER_STOP_TIMEOUT_S = 30.0
PG_START_TIMEOUT_S = 60

T = TypeVar("T")


def find_repo_root(start: Path = Path(__file__).resolve()) -> Path:
    """The workspace root: the folder holding uv.lock, else 4 parents up from libs/devtools/src/devtools."""
    for folder in start.parents:
        if (folder / "uv.lock").is_file():
            return folder
    return start.parents[4]


REPO_ROOT = find_repo_root()
INFRA_DIR = REPO_ROOT / "infra"


class InfraError(RuntimeError):
    """A prerequisite is missing or a start-up step failed; the message says what to do about it."""


class InfraSettings(BaseSettings):
    """Where the state lives and which ports to use; every field can be set by its upper-case env var."""

    model_config = SettingsConfigDict(extra="ignore")

    state_dir: Path = Field(default_factory=lambda: REPO_ROOT / ".state")
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    kafka_heap: str = "-Xms64m -Xmx512m"
    postgres_port: int = 54320
    postgres_user: str = "postgres"
    # The broker's jars; default `<state_dir>/kafka/jars`. A second broker (an outage test's) reuses the resolved
    # jars of the main state folder instead of downloading its own.
    kafka_jars_dir: Path | None = None
    java_home: str | None = None
    # auto: Docker Compose when a Docker engine answers, else local processes; local/docker force one of them.
    infra_mode: Literal["auto", "local", "docker"] = "auto"

    @field_validator("state_dir", "kafka_jars_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # Absolute, because the broker and PostgreSQL run with other working directories.
        return value.expanduser().resolve() if value is not None else None


@dataclass(frozen=True)
class KafkaPaths:
    """The broker's files under `<state>/kafka`."""

    root: Path
    jars_dir: Path | None = None  # elsewhere when shared with another state folder

    @property
    def jars(self) -> Path:
        return self.jars_dir or self.root / "jars"

    @property
    def jars_marker(self) -> Path:
        return self.jars / ".resolved"  # holds the hash of the pom the jars were copied for

    @property
    def properties(self) -> Path:
        return self.root / "server.properties"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def cluster_id(self) -> Path:
        return self.root / "cluster.id"

    @property
    def pid(self) -> Path:
        return self.root / "kafka.pid"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def console(self) -> Path:
        return self.logs / "console.log"  # JVM stdout/stderr: crashes before log4j is up land here


def kafka_paths(settings: InfraSettings) -> KafkaPaths:
    return KafkaPaths(settings.state_dir / "kafka", settings.kafka_jars_dir)


def local_bootstrap(settings: InfraSettings | None = None) -> str:
    """Kafka bootstrap servers of the local (or compose) broker."""
    settings = settings or InfraSettings()
    return f"{LOCALHOST}:{settings.kafka_port}"


def postgres_dsn(settings: InfraSettings | None = None, database: str = "postgres") -> str:
    """libpq URL of one database on the local server (trust auth on 127.0.0.1: no password)."""
    settings = settings or InfraSettings()
    return f"postgresql://{settings.postgres_user}@{LOCALHOST}:{settings.postgres_port}/{database}"


def say(message: str) -> None:
    print(f"[infra] {message}", flush=True)


# ---------------------------------------------------------------------------------------------------------
# Small process and file helpers
# ---------------------------------------------------------------------------------------------------------


def run(cmd: Sequence[str], *, what: str, timeout: float = 600, stdin: str | None = None) -> str:
    """Run a command to completion; on failure raise InfraError naming the step and showing its output."""
    try:
        done = subprocess.run(
            list(cmd), input=stdin, capture_output=True, text=True, timeout=timeout, cwd="/", check=False
        )
    except FileNotFoundError as exc:
        raise InfraError(f"{what}: {cmd[0]} not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise InfraError(f"{what}: no result after {timeout:.0f} s: {shlex.join(cmd)}") from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        raise InfraError(f"{what} failed (exit {done.returncode}): {shlex.join(cmd)}\n{tail_text(output)}")
    return done.stdout


def tail_text(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def tail_file(path: Path, lines: int = 40) -> str:
    """The end of a log for an error message; empty when there is no log or it is empty."""
    with contextlib.suppress(OSError):
        if text := path.read_text(errors="replace").strip():
            return f"--- last lines of {path} ---\n{tail_text(text, lines)}"
    return ""


def error_lines(path: Path, limit: int = 12) -> str:
    """The last ERROR/FATAL and `Caused by` lines of a Java log: the reason, without 40 lines of stack trace."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"--- {path}: no log ---"
    reasons = [line for line in lines if re.search(r"\b(ERROR|FATAL)\b|^Caused by:", line)]
    return f"--- errors in {path} ---\n" + "\n".join(reasons[-limit:] or lines[-limit:])


def process_alive(pid: int, needle: bytes) -> bool:
    """True if `pid` runs and its command line holds `needle` (a recycled pid of another program is not ours).

    An exited but not yet reaped process (zombie) has an empty command line, so it counts as gone.
    """
    try:
        return needle in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def wait_until_reaped(pid: int, timeout_s: float = 5.0) -> None:
    """Best effort: give init a moment to reap an exited server, so `ps` right after `down` shows nothing."""
    deadline = time.monotonic() + timeout_s
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def read_pid(path: Path) -> int | None:
    """First line of a pid file (ours or PostgreSQL's postmaster.pid) as an int; None if absent or garbled."""
    try:
        first = path.read_text().split("\n", 1)[0].strip()
    except OSError:
        return None
    return int(first) if first.isdigit() else None


def port_open(port: int, host: str = LOCALHOST, timeout: float = 0.5) -> bool:
    """A TCP connect succeeds; necessary but not sufficient for a service to be ready."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine from sync code, also when the caller already runs an event loop (async fixtures)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


@contextlib.contextmanager
def state_lock(settings: InfraSettings) -> Iterator[None]:
    """Serialize `up`/`down` of one state folder: parallel test workers must not start two brokers."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with (settings.state_dir / ".infra.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# ---------------------------------------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------------------------------------


def render_server_properties(settings: InfraSettings, data_dir: Path) -> str:
    """server.properties of a single-node KRaft broker + controller; the comments say why each line."""
    port, ctrl = settings.kafka_port, settings.kafka_controller_port
    return f"""\
# Written by devtools.infra on every `up`; edit the generator, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers={LOCALHOST}:{ctrl}
listeners=PLAINTEXT://{LOCALHOST}:{port},CONTROLLER://{LOCALHOST}:{ctrl}
advertised.listeners=PLAINTEXT://{LOCALHOST}:{port},CONTROLLER://{LOCALHOST}:{ctrl}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data_dir}/kraft
# Topics are created explicitly from contracts.topics.TOPIC_SPECS: a typo in a topic name fails, not creates.
auto.create.topics.enable=false
num.partitions=1
# One node: replication factors and min ISR default to 3 and 2, which would break groups and transactions.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
# Tests join groups constantly: no 3 s wait for more members.
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
# The default 128 MiB log-cleaner buffer is allocated on the heap at start.
log.cleaner.dedupe.buffer.size=8388608
"""


def new_cluster_id() -> str:
    """Like `kafka-storage random-uuid`: 16 random bytes, URL-safe base64, no padding, no leading '-'."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def java_major_version(version_output: str) -> int | None:
    """Major version from `java -version` output ('1.8.0_392' -> 8, '17.0.15' -> 17)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def find_java(settings: InfraSettings) -> str:
    """Path of a Java 17+ `java` (JAVA_HOME first, then PATH)."""
    candidate = Path(settings.java_home) / "bin" / "java" if settings.java_home else None
    java = str(candidate) if candidate and candidate.is_file() else shutil.which("java")
    hint = "install openjdk-17-jre-headless (apt-get install -y openjdk-17-jre-headless) or set JAVA_HOME"
    if java is None:
        raise InfraError(f"Java 17+ not found: {hint}")
    done = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    major = java_major_version(done.stderr + done.stdout)
    if major is None or major < 17:
        raise InfraError(f"Java 17+ required for Kafka {KAFKA_VERSION}, {java} is {major or '?'}: {hint}")
    return java


def pom_digest() -> str:
    return hashlib.sha256((INFRA_DIR / "pom.xml").read_bytes()).hexdigest()


def resolve_jars(paths: KafkaPaths) -> None:
    """Copy the broker's runtime jars once; the marker (pom hash) makes later runs, and tests, offline."""
    digest = pom_digest()
    if paths.jars_marker.is_file() and paths.jars_marker.read_text().strip() == digest:
        return
    mvn = shutil.which("mvn")
    if mvn is None:
        raise InfraError("Maven not found: install maven (apt-get install -y maven) to fetch the Kafka jars")
    say(f"resolving Kafka {KAFKA_VERSION} jars from Maven Central (first run only)...")
    shutil.rmtree(paths.jars, ignore_errors=True)  # a half-finished or older copy must not mix versions
    run(
        [
            mvn, "-B", "-q", "-f", str(INFRA_DIR / "pom.xml"),
            "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
            "-DincludeScope=runtime", f"-DoutputDirectory={paths.jars}",
        ],
        what="resolving the Kafka jars with Maven",
    )  # fmt: skip
    paths.jars_marker.write_text(digest + "\n")


def java_command(java: str, paths: KafkaPaths, heap: Sequence[str], main: Sequence[str]) -> list[str]:
    log4j_config = INFRA_DIR / "log4j2.properties"
    log4j = [f"-Dlog4j2.configurationFile={log4j_config}", f"-Dkafka.logs.dir={paths.logs}"]
    return [java, *heap, *JVM_FLAGS, *log4j, "-cp", f"{paths.jars}/*", *main]


def format_storage(java: str, paths: KafkaPaths) -> None:
    """Format the KRaft log dir once (a second format fails); the cluster id is kept beside it."""
    if (paths.data / "kraft" / "meta.properties").is_file():
        return
    if not paths.cluster_id.is_file():
        paths.cluster_id.write_text(new_cluster_id() + "\n")
    cluster_id = paths.cluster_id.read_text().strip()
    say(f"Kafka: formatting storage {paths.data} (cluster id {cluster_id})")
    # --standalone pairs with controller.quorum.bootstrap.servers (a dynamic quorum of this one controller).
    main = ["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(paths.properties)]
    cmd = java_command(java, paths, ["-Xmx128m"], [*main, "--standalone"])
    run(cmd, what="formatting the Kafka storage", timeout=120)


def kafka_pid(paths: KafkaPaths) -> int | None:
    pid = read_pid(paths.pid)
    return pid if pid is not None and process_alive(pid, b"kafka.Kafka") else None


_children: dict[int, subprocess.Popen[bytes]] = {}  # brokers this process started: reaped in stop_kafka


def launch_broker(java: str, settings: InfraSettings, paths: KafkaPaths) -> int:
    """Start the broker detached (own session, so Ctrl-C of the caller does not kill it); returns its pid."""
    cmd = java_command(java, paths, shlex.split(settings.kafka_heap), ["kafka.Kafka", str(paths.properties)])
    with paths.console.open("ab") as console:
        process = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
            cwd=paths.root, start_new_session=True,
        )  # fmt: skip
    _children[process.pid] = process
    paths.pid.write_text(f"{process.pid}\n")
    return process.pid


def start_kafka(settings: InfraSettings) -> int | None:
    """Begin starting the broker without waiting for it; returns the pid to wait on, None when reused."""
    paths = kafka_paths(settings)
    bootstrap = local_bootstrap(settings)
    pid = kafka_pid(paths)
    if pid is not None:
        say(f"Kafka: broker already running (pid {pid}) on {bootstrap}")
        return pid
    if port_open(settings.kafka_port):
        if not run_async(lambda: broker_answers(bootstrap, timeout_s=10)):
            raise InfraError(f"{bootstrap} is taken by a process that is not a Kafka broker: stop it or set KAFKA_PORT")
        say(f"Kafka: a broker not started here answers on {bootstrap}; reusing it")
        return None
    java = find_java(settings)
    for folder in (paths.root, paths.data, paths.logs):
        folder.mkdir(parents=True, exist_ok=True)
    resolve_jars(paths)
    paths.properties.write_text(render_server_properties(settings, paths.data))
    format_storage(java, paths)
    pid = launch_broker(java, settings, paths)
    say(f"Kafka: starting broker {KAFKA_VERSION} (pid {pid}) on {bootstrap}, log {paths.logs / 'server.log'}")
    return pid


async def broker_answers(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """A real metadata round trip succeeds (an open port alone may still be a starting or foreign server)."""
    host, _, port = bootstrap.rpartition(":")
    if not port_open(int(port), host):
        return False
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        await asyncio.wait_for(admin.list_topics(), timeout_s)
        return True
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()


def broker_exited(pid: int) -> bool:
    """Whether the broker's JVM is gone: asked of the process object when this process started it (the /proc
    check once reported a starting broker gone while it ran on, failing a test's start-up), else of /proc."""
    child = _children.get(pid)
    if child is not None:
        return child.poll() is not None
    return not process_alive(pid, b"kafka.Kafka")


async def wait_for_broker(settings: InfraSettings, pid: int | None) -> None:
    """Poll until the broker answers metadata requests; fail early, with the log tail, if its JVM died."""
    paths = kafka_paths(settings)
    bootstrap = local_bootstrap(settings)
    deadline = time.monotonic() + BROKER_START_TIMEOUT_S
    while not await broker_answers(bootstrap):
        if pid is not None and broker_exited(pid):
            raise InfraError(
                f"Kafka broker (pid {pid}) exited during start-up\n"
                f"{error_lines(paths.logs / 'server.log')}\n{tail_file(paths.console, 15)}"
            )
        if time.monotonic() > deadline:
            raise InfraError(
                f"Kafka on {bootstrap} did not answer within {BROKER_START_TIMEOUT_S:.0f} s\n"
                f"{error_lines(paths.logs / 'server.log')}"
            )
        await asyncio.sleep(0.5)


async def ensure_topics(bootstrap: str, prefix: str = "") -> None:
    """Create every topic of contracts.topics.TOPIC_SPECS (names under `prefix`) that does not exist yet.

    The broker runs with auto-creation off, so this is the one place topics come from: partition counts and
    configs (compaction of status definitions) as the contracts declare them, replication factor 1 (one node).
    Tests call it with a per-test prefix to get isolated topics. Returns once the topics have leaders.
    """
    specs = {prefixed(spec.topic, prefix): spec for spec in TOPIC_SPECS}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="devtools-infra")
    await admin.start()
    try:
        missing = sorted(set(specs) - set(await admin.list_topics()))
        if not missing:
            return
        new_topics = [
            NewTopic(name, specs[name].partitions, replication_factor=1, topic_configs=specs[name].config)
            for name in missing
        ]
        response = await admin.create_topics(new_topics, timeout_ms=30_000)
        for topic, error_code, *_ in response.topic_errors:
            # Another process may have created it meanwhile: that is the state we want.
            if error_code not in (0, TopicAlreadyExistsError.errno):
                raise InfraError(f"creating topic {topic} failed: {for_code(error_code).__name__}")
        await wait_for_leaders(admin, missing)
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, prefix: str) -> None:
    """Delete every topic whose name starts with `prefix`: a test's namespace, at its teardown.

    Per-test topics otherwise pile up (thousands of partitions slow the broker's start and stop).
    An empty prefix is refused: it would delete the contract topics themselves.
    """
    if not prefix:
        raise ValueError("delete_topics needs a non-empty prefix")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="devtools-infra")
    await admin.start()
    try:
        doomed = [name for name in await admin.list_topics() if name.startswith(prefix)]
        if doomed:
            await admin.delete_topics(doomed, timeout_ms=30_000)
    finally:
        await admin.close()


async def wait_for_leaders(admin: AIOKafkaAdminClient, topics: list[str], timeout_s: float = 30.0) -> None:
    """Wait until every partition of `topics` has a leader: a first send must not race the creation."""
    deadline = time.monotonic() + timeout_s
    while True:
        described = await admin.describe_topics(topics)
        if all(t["error_code"] == 0 and all(p["leader"] >= 0 for p in t["partitions"]) for t in described):
            return
        if time.monotonic() > deadline:
            raise InfraError(f"topics without leaders after {timeout_s:.0f} s: {topics}")
        await asyncio.sleep(0.2)


def stop_kafka(settings: InfraSettings) -> None:
    """SIGTERM the broker's process group (a clean controlled shutdown), SIGKILL after 30 s."""
    paths = kafka_paths(settings)
    pid = kafka_pid(paths)
    if pid is None:
        say("Kafka: not running")
        paths.pid.unlink(missing_ok=True)
        return
    say(f"Kafka: stopping broker (pid {pid})")
    if not signal_group_and_wait(pid, signal.SIGTERM, BROKER_STOP_TIMEOUT_S):
        say(f"Kafka: broker ignored SIGTERM for {BROKER_STOP_TIMEOUT_S:.0f} s; killing it")
        signal_group_and_wait(pid, signal.SIGKILL, 10)
    paths.pid.unlink(missing_ok=True)
    wait_until_reaped(pid)


def signal_group_and_wait(pid: int, sig: signal.Signals, timeout_s: float) -> bool:
    """Signal the process group led by `pid`; True once the process is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        child = _children.get(pid)
        if child is not None and child.poll() is not None:
            del _children[pid]  # reaped: started by this very process (a test session)
        if not process_alive(pid, b"kafka.Kafka"):
            return True
        time.sleep(0.2)
    return False


# ---------------------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------------------


def postgres_bindir() -> Path | None:
    """Server binaries: the highest /usr/lib/postgresql/<major>/bin (Debian), else what pg_config names."""
    debian = sorted(
        (d for d in Path("/usr/lib/postgresql").glob("*/bin") if (d / "initdb").is_file()),
        key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0,
    )
    if debian:
        return debian[-1]
    pg_config = shutil.which("pg_config")
    if pg_config:
        done = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        bindir = Path(done.stdout.strip())
        if done.returncode == 0 and (bindir / "initdb").is_file():
            return bindir
    return None


def ensure_postgres_binaries() -> Path:
    """Find the server binaries; as root install the Debian package when they are missing."""
    bindir = postgres_bindir()
    if bindir is not None:
        return bindir
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise InfraError("PostgreSQL server binaries not found: install the Debian package postgresql")
    say("PostgreSQL server binaries not found; installing the Debian package postgresql (apt-get)...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"]):
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise InfraError(f"{shlex.join(cmd)} failed (exit {done.returncode}):\n{tail_text(done.stderr)}")
    bindir = postgres_bindir()
    if bindir is None:
        raise InfraError("apt-get installed postgresql, yet no /usr/lib/postgresql/*/bin/initdb exists")
    return bindir


def postgres_os_user() -> pwd.struct_passwd | None:
    """The account that runs the server: `postgres` when we are root (it refuses root), None = ourselves."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(PG_OS_USER)
    say(f"creating system user {PG_OS_USER} to run PostgreSQL (it refuses to run as root)")
    run(["useradd", "--system", "--user-group", "--no-create-home", PG_OS_USER], what="useradd")
    return pwd.getpwnam(PG_OS_USER)


def is_traversable(path: Path, uid: int, gids: Iterable[int]) -> bool:
    """Whether a user may enter `path` and all its ancestors (search bit of the class that applies to them).

    Unix checks only the owner bits for the owner, the group bits for group members, else the other bits.
    Ancestors that do not exist yet are skipped (they will be created later). ACLs are not considered.
    """
    if uid == 0:
        return True
    groups = set(gids)
    for folder in (path, *path.parents):
        try:
            info = folder.stat()
        except FileNotFoundError:
            continue
        if info.st_uid == uid:
            needed = stat.S_IXUSR
        elif info.st_gid in groups:
            needed = stat.S_IXGRP
        else:
            needed = stat.S_IXOTH
        if not info.st_mode & needed:
            return False
    return True


def fallback_postgres_dir(state_dir: Path) -> Path:
    """Data dir outside a checkout the server user cannot enter (CI clones into a root-only `mktemp -d`)."""
    digest = hashlib.sha256(str(state_dir).encode()).hexdigest()[:12]
    return PG_FALLBACK_ROOT / digest / "postgres"


def postgres_data_dir(settings: InfraSettings, user: pwd.struct_passwd | None) -> Path:
    """`<state>/postgres`, unless the server's OS user cannot reach the state folder."""
    default = settings.state_dir / "postgres"
    if user is None:
        return default
    if is_traversable(settings.state_dir, user.pw_uid, os.getgrouplist(user.pw_name, user.pw_gid)):
        return default
    return fallback_postgres_dir(settings.state_dir)


def existing_postgres_os_user() -> pwd.struct_passwd | None:
    """Like postgres_os_user, but never creates the account (for status/down)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(PG_OS_USER)
    except KeyError:
        return None


def as_server_user(user: pwd.struct_passwd | None, cmd: Sequence[str]) -> list[str]:
    return ["runuser", "-u", user.pw_name, "--", *cmd] if user else list(cmd)


def prepare_data_dir(data_dir: Path, user: pwd.struct_passwd | None) -> None:
    """Create the data dir owned by the server user with mode 700 (initdb and the server insist)."""
    if data_dir.parent.parent == PG_FALLBACK_ROOT:
        for folder in (PG_FALLBACK_ROOT, data_dir.parent):
            folder.mkdir(exist_ok=True)
            folder.chmod(0o755)  # explicit: a umask of 077 would lock the server user out again
    data_dir.mkdir(parents=True, exist_ok=True)
    if user is not None:
        os.chown(data_dir, user.pw_uid, user.pw_gid)
    data_dir.chmod(0o700)


def postgres_pid(data_dir: Path) -> int | None:
    pid = read_pid(data_dir / "postmaster.pid")
    return pid if pid is not None and process_alive(pid, b"postgres") else None


def postgres_ready(bindir: Path, port: int) -> bool:
    cmd = [str(bindir / "pg_isready"), "-q", "-h", LOCALHOST, "-p", str(port), "-t", "2"]
    return subprocess.run(cmd, check=False, cwd="/").returncode == 0


def socket_dir_option(data_dir: Path, port: int) -> str:
    """The Unix socket goes into the data dir (always writable by the server); '' (TCP only) if too long."""
    too_long = len(str(data_dir / f".s.PGSQL.{port}")) > 100  # sun_path holds 107 bytes
    return "" if too_long else str(data_dir)


def start_postgres(settings: InfraSettings) -> None:
    """Find or install the binaries, initdb once, start the server, create the service databases."""
    bindir = ensure_postgres_binaries()
    port = settings.postgres_port
    if postgres_ready(bindir, port):
        say(f"PostgreSQL: a server already answers on {LOCALHOST}:{port}; reusing it")
    else:
        user = postgres_os_user()
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        data_dir = postgres_data_dir(settings, user)
        if data_dir.parent.parent == PG_FALLBACK_ROOT:
            say(f"PostgreSQL: {settings.state_dir} is not reachable by user {PG_OS_USER}; data in {data_dir}")
        prepare_data_dir(data_dir, user)
        init_cluster(bindir, data_dir, user, settings.postgres_user)
        launch_postgres(bindir, data_dir, user, port)
    create_databases(bindir, settings)


def init_cluster(bindir: Path, data_dir: Path, user: pwd.struct_passwd | None, superuser: str) -> None:
    if (data_dir / "PG_VERSION").is_file():
        return
    say(f"PostgreSQL: initdb {data_dir}")
    initdb = [str(bindir / "initdb"), "-D", str(data_dir), "-A", "trust", "-U", superuser, "--encoding=UTF8"]
    run(as_server_user(user, [*initdb, "--no-locale"]), what="initdb", timeout=300)


def launch_postgres(bindir: Path, data_dir: Path, user: pwd.struct_passwd | None, port: int) -> None:
    """pg_ctl start and wait; pg_ctl detaches the server, its log goes to <data dir>/server.log."""
    options = (
        f"-p {port} -k {shlex.quote(socket_dir_option(data_dir, port))} -c listen_addresses={LOCALHOST}"
        " -c max_connections=200 -c shared_buffers=128MB"
    )
    log = data_dir / "server.log"
    pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data_dir), "-l", str(log), "-o", options, "-w"]
    say(f"PostgreSQL: starting on {LOCALHOST}:{port}, data {data_dir}")
    try:
        run(as_server_user(user, [*pg_ctl, "-t", str(PG_START_TIMEOUT_S), "start"]), what="pg_ctl start")
    except InfraError as exc:
        raise InfraError(f"{exc}\n{tail_file(log)}") from exc
    deadline = time.monotonic() + PG_START_TIMEOUT_S
    while not postgres_ready(bindir, port):
        if time.monotonic() > deadline:
            raise InfraError(f"PostgreSQL started but pg_isready fails on port {port}\n{tail_file(log)}")
        time.sleep(0.3)


def create_databases_sql(databases: Iterable[str] = SERVICE_DATABASES) -> str:
    """psql script creating each missing database (CREATE DATABASE has no IF NOT EXISTS; \\gexec fills in)."""
    names = ", ".join(f"'{name}'" for name in databases)
    return (
        f"SELECT format('CREATE DATABASE %I', name) FROM unnest(ARRAY[{names}]) AS name\n"
        "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = name)\\gexec\n"
    )


def create_databases(bindir: Path, settings: InfraSettings) -> None:
    psql = [
        str(bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
        "-h", LOCALHOST, "-p", str(settings.postgres_port), "-U", settings.postgres_user, "-d", "postgres",
    ]  # fmt: skip
    run(psql, what="creating the service databases", stdin=create_databases_sql(), timeout=60)
    say(f"PostgreSQL: databases {', '.join(SERVICE_DATABASES)} present")


def stop_postgres(settings: InfraSettings, mode: Literal["fast", "immediate"] = "fast") -> None:
    """pg_ctl stop -m fast (rolls back open transactions, no recovery needed at the next start).

    `immediate` (outage tests) quits without a checkpoint, like a crash: the next start replays the WAL.
    """
    user = existing_postgres_os_user()
    data_dir = postgres_data_dir(settings, user)
    pid = postgres_pid(data_dir)
    bindir = postgres_bindir()
    if pid is None or bindir is None:
        say("PostgreSQL: not running")
        return
    say(f"PostgreSQL: stopping (pid {pid}, data {data_dir})")
    pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data_dir), "-m", mode, "-w", "-t", "60", "stop"]
    run(as_server_user(user, pg_ctl), what="pg_ctl stop")
    wait_until_reaped(pid)


# ---------------------------------------------------------------------------------------------------------
# Docker Compose (machines with a Docker engine)
# ---------------------------------------------------------------------------------------------------------


def docker_engine_answers() -> bool:
    """`docker info` succeeds quickly; a docker client without an engine (like here) does not count."""
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=5, check=False)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def use_docker(settings: InfraSettings) -> bool:
    return settings.infra_mode == "docker" or (settings.infra_mode == "auto" and docker_engine_answers())


def compose(*args: str) -> list[str]:
    return ["docker", "compose", "-f", str(REPO_ROOT / "docker-compose.yml"), *args]


def docker_up(settings: InfraSettings) -> None:
    say("Docker engine found: docker compose up kafka postgres")
    run(compose("up", "-d", "--wait", "kafka", "postgres"), what="docker compose up", timeout=600)
    psql = [*compose("exec", "-T", "postgres"), "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    psql += ["-U", settings.postgres_user]
    run(psql, what="creating the service databases", stdin=create_databases_sql(), timeout=60)


# ---------------------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------------------


def up(settings: InfraSettings | None = None) -> None:
    """Start (or reuse) Kafka and PostgreSQL, create topics and databases; returns once both answer."""
    settings = settings or InfraSettings()
    started = time.monotonic()
    bootstrap = local_bootstrap(settings)
    if use_docker(settings):
        docker_up(settings)
        run_async(lambda: wait_for_broker(settings, None))
    else:
        with state_lock(settings):
            pid = start_kafka(settings)
            start_postgres(settings)  # while the JVM boots
            run_async(lambda: wait_for_broker(settings, pid))
    say(f"Kafka: broker answers on {bootstrap}")
    run_async(lambda: ensure_topics(bootstrap))
    say(f"Kafka: {len(TOPIC_SPECS)} contract topics present")
    say(f"up in {time.monotonic() - started:.1f} s (connection settings: python -m devtools.infra env)")


def down(settings: InfraSettings | None = None) -> None:
    """Stop what `up` started; nothing running is fine."""
    settings = settings or InfraSettings()
    if use_docker(settings):
        run(compose("down"), what="docker compose down", timeout=300)
        return
    with state_lock(settings):
        stop_kafka(settings)
        stop_postgres(settings)


def status(settings: InfraSettings | None = None) -> None:
    """Print what runs where; informational, always succeeds."""
    settings = settings or InfraSettings()
    if use_docker(settings):
        print(run(compose("ps"), what="docker compose ps"), end="")
        return
    paths = kafka_paths(settings)
    answers = run_async(lambda: broker_answers(local_bootstrap(settings)))
    say(describe("Kafka", kafka_pid(paths), local_bootstrap(settings), paths.data, answers))
    user = existing_postgres_os_user()
    data_dir = postgres_data_dir(settings, user)
    bindir = postgres_bindir()
    port = settings.postgres_port
    ready = bindir is not None and postgres_ready(bindir, port)
    say(describe("PostgreSQL", postgres_pid(data_dir), f"{LOCALHOST}:{port}", data_dir, ready))


def describe(name: str, pid: int | None, address: str, data_dir: Path, answers: bool) -> str:
    state = f"running (pid {pid})" if pid is not None else "not running"
    reachable = "answers" if answers else "does not answer"
    foreign = " (not started by us)" if pid is None and answers else ""
    return f"{name}: {state}, {address} {reachable}{foreign}, data {data_dir}"


def env_lines(settings: InfraSettings) -> list[str]:
    """Shell-sourceable connection settings: `eval "$(python -m devtools.infra env)"`."""
    server = postgres_dsn(settings).rsplit("/", 1)[0]
    return [
        f"KAFKA_BOOTSTRAP_SERVERS={shlex.quote(local_bootstrap(settings))}",
        f"POSTGRES_DSN={shlex.quote(server)}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.infra", description="Local Kafka + PostgreSQL")
    parser.add_argument(
        "command",
        choices=("up", "down", "status", "env", "topics"),
        help="topics: create the platform's topics on $KAFKA_BOOTSTRAP_SERVERS (or the local broker) and exit",
    )
    command = parser.parse_args(argv).command
    settings = InfraSettings()
    try:
        if command == "up":
            up(settings)
        elif command == "down":
            down(settings)
        elif command == "status":
            status(settings)
        elif command == "topics":
            asyncio.run(ensure_topics(os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or local_bootstrap(settings)))
        else:
            print("\n".join(env_lines(settings)))
    except InfraError as exc:
        print(f"[infra] error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
