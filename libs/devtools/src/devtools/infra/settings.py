"""Where the local infrastructure lives and how to reach it: the repo root, ports, the state folder."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOCALHOST = "127.0.0.1"


def find_repo_root(start: Path = Path(__file__).resolve()) -> Path:
    """The workspace root: the folder holding uv.lock, else 5 parents up from libs/devtools/src/devtools/infra."""
    for folder in start.parents:
        if (folder / "uv.lock").is_file():
            return folder
    return start.parents[5]


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


def local_bootstrap(settings: InfraSettings | None = None) -> str:
    """Kafka bootstrap servers of the local (or compose) broker."""
    settings = settings or InfraSettings()
    return f"{LOCALHOST}:{settings.kafka_port}"


def postgres_dsn(settings: InfraSettings | None = None, database: str = "postgres") -> str:
    """libpq URL of one database on the local server (trust auth on 127.0.0.1: no password)."""
    settings = settings or InfraSettings()
    return f"postgresql://{settings.postgres_user}@{LOCALHOST}:{settings.postgres_port}/{database}"
