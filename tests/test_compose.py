"""docker-compose.yml and the Dockerfile cannot run here (no Docker engine), so their agreement with the code is
checked instead."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from devtools import platform, run
from devtools.infra.postgres import SERVICE_DATABASES
from devtools.platform import CONSOLE, CONSOLE_BACKENDS
from servicekit.migrate import package_of, settings_class
from servicekit.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").exists())


def environment(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in COMPOSE["services"][service]["environment"].items()}


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_is_in_compose_with_its_settings(service: str) -> None:
    assert service in COMPOSE["services"], f"{service} is missing from docker-compose.yml"
    settings = settings_class(service)
    env = environment(service)
    known = {name.upper() for name in settings.model_fields}
    assert set(env) <= known, f"{service}: variables no settings field reads: {sorted(set(env) - known)}"

    defaults = settings()
    assert int(env["HTTP_PORT"]) == defaults.http_port
    assert [container_port(p) for p in COMPOSE["services"][service]["ports"]] == [str(defaults.http_port)]
    assert env["DATABASE_URL"].rsplit("/", 1)[1] == defaults.database_url.rsplit("/", 1)[1]
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092"
    build = COMPOSE["services"][service]["build"]
    assert build["args"]["SERVICE"] == service


def host_port(mapping: str) -> str:
    """The host side of a short-syntax port mapping ("8001", "127.0.0.1::8001", "8001:8001"): empty when the engine
    picks a free port."""
    parts = mapping.split(":")
    return parts[-2] if len(parts) > 1 else ""


def container_port(mapping: str) -> str:
    return mapping.split(":")[-1].split("/")[0]


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_scales_with_docker_compose(service: str) -> None:
    """`docker compose up --scale <service>=N`: a fixed container name or host port would let only one replica
    start ("container name already in use", "port is already allocated")."""
    definition = COMPOSE["services"][service]
    assert "container_name" not in definition, f"{service}: a fixed container_name stops --scale"
    fixed = [p for p in definition.get("ports", []) if host_port(str(p))]
    assert not fixed, f"{service}: fixed host ports {fixed} stop --scale; publish the container port alone"


def test_port_mappings_are_read_as_docker_reads_them() -> None:
    assert (host_port("127.0.0.1::8001"), container_port("127.0.0.1::8001")) == ("", "8001")
    assert (host_port("8001:8001"), container_port("8001:8001")) == ("8001", "8001")
    assert (host_port("127.0.0.1:8001:8001"), container_port("127.0.0.1:8001:8001")) == ("8001", "8001")
    assert (host_port("8001"), container_port("8001/tcp")) == ("", "8001")


def test_infrastructure_ports_match_the_local_defaults() -> None:
    defaults = ServiceSettings()
    kafka_port = defaults.kafka_bootstrap_servers.rsplit(":", 1)[1]
    postgres_port = defaults.database_url.split("@", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
    assert f"{kafka_port}:{kafka_port}" in COMPOSE["services"]["kafka"]["ports"]
    assert COMPOSE["services"]["postgres"]["ports"] == [f"{postgres_port}:5432"]


def test_postgres_init_creates_one_database_per_service() -> None:
    init = (ROOT / "infra" / "postgres-init.sql").read_text()
    for service in SERVICES:
        database = settings_class(service)().database_url.rsplit("/", 1)[1]
        assert f"CREATE DATABASE {database};" in init


def test_the_local_tooling_starts_every_service_on_its_port_with_its_database() -> None:
    """`make run`/`make up` (the Procfile, devtools.run), the e2e tests (devtools.platform) and `make infra-up`
    (the databases it creates) know every service of services/, each on the port its settings default to."""
    assert set(run.procfile_commands()) == set(SERVICES)
    assert set(run.SERVICES) | {CONSOLE} == set(platform.APPS) == set(SERVICES)
    ports = {service: settings_class(service)().http_port for service in SERVICES}
    assert ports == run.SERVICES | {CONSOLE: run.CONSOLE_PORT}
    assert sorted(SERVICE_DATABASES) == sorted(settings_class(s)().database_url.rsplit("/", 1)[1] for s in SERVICES)


def test_the_console_setting_of_each_backend_names_that_service() -> None:
    """CONSOLE_BACKENDS, which the tests and `make run` go by, is every API address the console reads, each
    defaulting to its service's local port."""
    console = settings_class(CONSOLE)()
    urls = {name.upper() for name in type(console).model_fields if name.endswith("_url") and name != "database_url"}
    assert set(CONSOLE_BACKENDS) == urls
    for variable, service in CONSOLE_BACKENDS.items():
        assert getattr(console, variable.lower()) == f"http://127.0.0.1:{settings_class(service)().http_port}"


def test_the_console_calls_the_services_by_their_compose_names() -> None:
    console = environment(CONSOLE)
    for variable, service in CONSOLE_BACKENDS.items():
        assert console[variable] == f"http://{service}:{environment(service)['HTTP_PORT']}", variable


def uv() -> str:
    """The uv that runs the tests (`uv run` sets UV), else one on PATH or the Makefile's copy. Missing uv fails."""
    for candidate in (os.environ.get("UV", ""), "uv", str(ROOT / ".state" / "tools" / "bin" / "uv")):
        if candidate and (found := shutil.which(candidate)):
            return found
    pytest.fail("uv is missing: run the tests with `make` or `uv run`, or set UV to a uv binary", pytrace=False)


@pytest.mark.parametrize("service", SERVICES)
def test_the_image_carries_every_file_of_the_service_package(service: str, tmp_path: Path) -> None:
    """The Dockerfile installs the service as a wheel (uv sync --no-editable): what the build backend leaves out
    of it (templates, static files, message catalogues, migrations) is missing from the image."""
    assert "--no-editable" in (ROOT / "Dockerfile").read_text()
    subprocess.run(
        [uv(), "build", "--offline", "--quiet", "--wheel", "--package", service, "--out-dir", str(tmp_path)],
        cwd=ROOT,
        check=True,
        timeout=120,
    )
    (wheel,) = tmp_path.glob("*.whl")
    source = ROOT / "services" / service / "src"
    package = source / package_of(service)
    expected = {
        path.relative_to(source).as_posix()
        for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    with zipfile.ZipFile(wheel) as archive:
        missing = expected - set(archive.namelist())
    assert not missing, f"{service}: the wheel leaves out {sorted(missing)}"


# What an image carries: the service's wheel and the workspace libraries it depends on.
SHIPPED = [*(ROOT / "services" / s for s in SERVICES), ROOT / "libs" / "contracts", ROOT / "libs" / "servicekit"]


def installable(requirements: list[str]) -> set[str]:
    """Every distribution that installing `requirements` brings in (extras followed), from the installed metadata."""
    seen: set[tuple[str, frozenset[str]]] = set()
    pending = [Requirement(r) for r in requirements]
    while pending:
        requirement = pending.pop()
        key = (canonicalize_name(requirement.name), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dependencies = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            continue
        for dependency in map(Requirement, dependencies):
            extras = requirement.extras or {""}
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": e}) for e in extras):
                pending.append(dependency)
    return {name for name, _ in seen}


def imported_modules(source: Path) -> set[str]:
    """The top-level names of the absolute imports in `source`'s modules, the standard library's left out."""
    modules = set()
    for path in source.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names)


@pytest.mark.parametrize("package", SHIPPED, ids=lambda p: p.name)
def test_a_shipped_package_declares_every_library_it_imports(package: Path) -> None:
    """An image holds only what the service's dependencies bring (`uv sync --package`), not the workspace's root
    dependencies that the tests run with: an import nothing declares works here and fails in the container."""
    project = tomllib.loads((package / "pyproject.toml").read_text())["project"]
    declared = installable(project["dependencies"]) | {canonicalize_name(project["name"])}
    distributions = metadata.packages_distributions()
    missing = {
        module
        for module in imported_modules(package / "src")
        if not {canonicalize_name(d) for d in distributions.get(module, [module])} & declared
    }
    assert not missing, f"{package.name} imports {sorted(missing)}, which its pyproject.toml does not bring in"
