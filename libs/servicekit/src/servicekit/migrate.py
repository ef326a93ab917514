"""`python -m servicekit.migrate <service>`: apply one service's migrations to its database, then exit.

A service applies its migrations itself at start-up (under yoyo's lock, so instances starting together apply
each migration once). A deployment that migrates once per release instead, before the new version rolls out
(the Helm chart's pre-install/pre-upgrade Job, docs/deploy.md), runs this with the service's environment: the
database is the service's `DATABASE_URL`, read by the service's own settings class. The instances that start
afterwards find nothing left to apply.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
from importlib import resources
from pathlib import Path

from servicekit.db import apply_migrations
from servicekit.settings import ServiceSettings

log = logging.getLogger(__name__)


def package_of(service: str) -> str:
    """A service's Python package is its name with '-' as '_' (status-registry -> status_registry)."""
    return service.replace("-", "_")


def settings_class(service: str) -> type[ServiceSettings]:
    """The one `ServiceSettings` subclass in `<package>.settings`: it holds the service's database default."""
    module = importlib.import_module(f"{package_of(service)}.settings")
    found = [
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, ServiceSettings) and cls is not ServiceSettings and cls.__module__ == module.__name__
    ]
    if len(found) != 1:
        raise LookupError(f"{module.__name__} should define exactly one ServiceSettings subclass, found {found}")
    return found[0]


def migrations_folder(service: str) -> Path:
    return Path(str(resources.files(package_of(service)) / "migrations"))


def migrate(service: str) -> None:
    settings = settings_class(service)()
    apply_migrations(settings.database_url, migrations_folder(service), plumbing=settings.uses_outbox)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m servicekit.migrate", description="Apply one service's migrations, then exit."
    )
    parser.add_argument("service", help="the service whose migrations to apply, e.g. orders or status-registry")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    migrate(args.service)
    log.info("migrations of %s applied", args.service)


if __name__ == "__main__":
    main()
