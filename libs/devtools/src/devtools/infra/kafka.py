"""Kafka 4.1.1 in KRaft mode, single node: the broker's jars are copied once from Maven Central with Maven
(infra/pom.xml) into the state folder and run with the local Java 17+, detached, one pid file."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from devtools.infra.processes import (
    error_lines,
    port_open,
    process_alive,
    read_pid,
    run,
    run_async,
    say,
    tail_file,
    wait_until_reaped,
)
from devtools.infra.settings import INFRA_DIR, LOCALHOST, InfraError, InfraSettings, local_bootstrap

KAFKA_VERSION = "4.1.1"  # keep in step with infra/pom.xml
# Small-machine JVM flags: serial GC and C1 only start the broker fastest on 2 cores; no hsperfdata files.
JVM_FLAGS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData", "-Djava.awt.headless=true")
BROKER_START_TIMEOUT_S = 90.0
BROKER_STOP_TIMEOUT_S = 30.0


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
