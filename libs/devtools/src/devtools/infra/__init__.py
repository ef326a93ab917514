"""Local Kafka and PostgreSQL for development and tests: `python -m devtools.infra up|down|status|env`.

Where a Docker engine answers, the repo's docker-compose.yml runs both (`docker`). Everywhere else (this project's
CI has no Docker engine) the project runs them itself:

* Kafka 4.1.1 in KRaft mode, single node (`kafka`): the broker's jars are copied once from Maven Central with
  Maven (infra/pom.xml) into the state folder and run with the local Java 17+, detached, one pid file.
* PostgreSQL from the Debian server binaries (package `postgresql`), one data directory, one database per
  service (`postgres`).

The platform's topics come from the contracts (`topics`), for `up` and for every test's or bench run's own
prefix. `commands` holds `up`, `down`, `status`, `env` and the command line; `settings` where the state lives
and which ports to use; `processes` the small helpers they share.

Everything is idempotent: `up` reuses what already runs (or anything else answering on the ports) and caches
every slow step (jar download, storage format, initdb), so a test fixture may call `up()` every session.

This package exports what the rest of the repository uses: the settings and connection strings, the commands,
topic provisioning, and the start and stop of one broker or server (the outage tests run their own).
"""

from devtools.infra.commands import down, main, status, up
from devtools.infra.kafka import kafka_paths, signal_group_and_wait, start_kafka, stop_kafka, wait_for_broker
from devtools.infra.postgres import (
    PG_FALLBACK_ROOT,
    existing_postgres_os_user,
    postgres_data_dir,
    start_postgres,
    stop_postgres,
)
from devtools.infra.settings import InfraError, InfraSettings, local_bootstrap, postgres_dsn
from devtools.infra.topics import delete_topics, ensure_topics

__all__ = [
    "PG_FALLBACK_ROOT",
    "InfraError",
    "InfraSettings",
    "delete_topics",
    "down",
    "ensure_topics",
    "existing_postgres_os_user",
    "kafka_paths",
    "local_bootstrap",
    "main",
    "postgres_data_dir",
    "postgres_dsn",
    "signal_group_and_wait",
    "start_kafka",
    "start_postgres",
    "status",
    "stop_kafka",
    "stop_postgres",
    "up",
    "wait_for_broker",
]
