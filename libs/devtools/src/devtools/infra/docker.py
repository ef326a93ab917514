"""Docker Compose, on machines with a Docker engine: the repo's docker-compose.yml runs Kafka and PostgreSQL."""

from __future__ import annotations

import shutil
import subprocess

from devtools.infra.postgres import create_databases_sql
from devtools.infra.processes import run, say
from devtools.infra.settings import REPO_ROOT, InfraSettings


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
