"""`up`, `down`, `status` and `env`, and the command line that runs them (`python -m devtools.infra`)."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from contracts.topics import TOPIC_SPECS
from devtools.infra.docker import compose, docker_up, use_docker
from devtools.infra.kafka import broker_answers, kafka_paths, kafka_pid, start_kafka, stop_kafka, wait_for_broker
from devtools.infra.postgres import (
    existing_postgres_os_user,
    postgres_bindir,
    postgres_data_dir,
    postgres_pid,
    postgres_ready,
    start_postgres,
    stop_postgres,
)
from devtools.infra.processes import run, run_async, say, state_lock
from devtools.infra.settings import LOCALHOST, InfraError, InfraSettings, local_bootstrap, postgres_dsn
from devtools.infra.topics import ensure_topics


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
