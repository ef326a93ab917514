"""devtools.infra: the pure helpers without any running infrastructure, plus one check against the real one."""

from __future__ import annotations

import base64
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from contracts.topics import TOPIC_SPECS, Topic, prefixed
from devtools import infra
from devtools.infra import commands, kafka, postgres
from devtools.infra.settings import INFRA_DIR, REPO_ROOT, find_repo_root
from devtools.pytest_plugin import wait_until

SETTINGS_ENV = (
    "STATE_DIR",
    "KAFKA_PORT",
    "KAFKA_CONTROLLER_PORT",
    "KAFKA_HEAP",
    "POSTGRES_PORT",
    "POSTGRES_USER",
    "JAVA_HOME",
    "INFRA_MODE",
)
OTHER_UID = 54321  # a user that owns nothing here and is in no group of these folders
OTHER_USER = pwd.struct_passwd(("nobody-here", "x", OTHER_UID, OTHER_UID, "", "/", "/bin/sh"))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """What CI's `mktemp -d` gives: a folder in /tmp with mode 700."""
    path = Path(tempfile.mkdtemp())
    try:
        yield path
    finally:
        path.chmod(0o700)
        for child in sorted(path.rglob("*"), reverse=True):
            child.rmdir()
        path.rmdir()


def parse_properties(text: str) -> dict[str, str]:
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_repo_root_holds_uv_lock() -> None:
    assert (REPO_ROOT / "uv.lock").is_file()
    assert (INFRA_DIR / "pom.xml").is_file()
    assert (INFRA_DIR / "log4j2.properties").is_file()


def test_repo_root_falls_back_to_five_parents_up(tmp_path: Path) -> None:
    module = tmp_path / "libs" / "devtools" / "src" / "devtools" / "infra" / "settings.py"
    assert find_repo_root(module) == tmp_path


@pytest.mark.usefixtures("clean_env")
def test_settings_defaults() -> None:
    settings = infra.InfraSettings()
    assert settings.state_dir == REPO_ROOT / ".state"
    assert (settings.kafka_port, settings.kafka_controller_port, settings.postgres_port) == (9092, 9093, 54320)
    assert settings.postgres_user == "postgres"
    assert infra.local_bootstrap(settings) == "127.0.0.1:9092"
    assert infra.postgres_dsn(settings) == "postgresql://postgres@127.0.0.1:54320/postgres"
    assert infra.postgres_dsn(settings, "orders") == "postgresql://postgres@127.0.0.1:54320/orders"


@pytest.mark.usefixtures("clean_env")
def test_settings_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STATE_DIR", "relative/state")
    monkeypatch.setenv("KAFKA_PORT", "19092")
    monkeypatch.setenv("POSTGRES_PORT", "54329")
    settings = infra.InfraSettings()
    assert settings.state_dir == tmp_path.resolve() / "relative" / "state"  # absolute: servers use other cwds
    assert commands.env_lines(settings) == [
        "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092",
        "POSTGRES_DSN=postgresql://postgres@127.0.0.1:54329",
    ]


@pytest.mark.usefixtures("clean_env")
def test_env_command_is_shell_sourceable(capsys: pytest.CaptureFixture[str]) -> None:
    assert infra.main(["env"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("=", 1)[0] for line in lines] == ["KAFKA_BOOTSTRAP_SERVERS", "POSTGRES_DSN"]


@pytest.mark.usefixtures("clean_env")
def test_module_runs_as_the_makefile_calls_it() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "devtools.infra", "env"], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.splitlines() == commands.env_lines(infra.InfraSettings())


def test_server_properties_single_node_kraft(tmp_path: Path) -> None:
    settings = infra.InfraSettings(kafka_port=19092, kafka_controller_port=19093)
    text = kafka.render_server_properties(settings, tmp_path)
    props = parse_properties(text)
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["log.dirs"] == f"{tmp_path}/kraft"
    assert props["auto.create.topics.enable"] == "false"
    single_node = [key for key in props if key.endswith((".replication.factor", ".min.isr"))]
    assert len(single_node) == 5
    assert all(props[key] == "1" for key in single_node)
    # .properties has no inline comments: a '#' after a value would become part of it.
    assert all("#" not in value for value in props.values())


def test_cluster_id_is_16_bytes_url_safe() -> None:
    for _ in range(200):
        cluster_id = kafka.new_cluster_id()
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_392"', 8),
        ("garbage", None),
    ],
)
def test_java_major_version(output: str, major: int | None) -> None:
    assert kafka.java_major_version(output) == major


def test_missing_java_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(infra.InfraError, match=r"Java 17\+ not found: install openjdk-17-jre-headless"):
        kafka.find_java(infra.InfraSettings(java_home=None))


def test_missing_maven_is_reported_before_any_download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(infra.InfraError, match="Maven not found: install maven"):
        kafka.resolve_jars(kafka.KafkaPaths(tmp_path))


def test_cached_jars_need_no_maven(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    paths = kafka.KafkaPaths(tmp_path)
    paths.jars.mkdir()
    paths.jars_marker.write_text(kafka.pom_digest())
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    kafka.resolve_jars(paths)  # no Maven, no error: the marker matches the pom


def test_missing_postgres_without_root_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres, "postgres_bindir", lambda: None)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(infra.InfraError, match="install the Debian package postgresql"):
        postgres.ensure_postgres_binaries()


def test_private_mktemp_dir_is_not_traversable(private_dir: Path) -> None:
    assert not postgres.is_traversable(private_dir / "repo" / ".state", OTHER_UID, [])


def test_open_dir_is_traversable(private_dir: Path) -> None:
    private_dir.chmod(0o711)
    assert postgres.is_traversable(private_dir / "repo" / ".state", OTHER_UID, [])


def test_group_bits_apply_to_group_members(private_dir: Path) -> None:
    private_dir.chmod(0o710)
    group = private_dir.stat().st_gid
    assert postgres.is_traversable(private_dir, OTHER_UID, [group])
    assert not postgres.is_traversable(private_dir, OTHER_UID, [group + 1])


def test_owner_bits_apply_to_the_owner_only(private_dir: Path) -> None:
    # Owner without x but "other" with x: Unix picks the owner class, so the owner is refused.
    private_dir.chmod(0o601)
    owner = private_dir.stat().st_uid
    if owner == 0:
        assert postgres.is_traversable(private_dir, owner, [])  # root passes any search permission check
    else:
        assert not postgres.is_traversable(private_dir, owner, [])
    assert postgres.is_traversable(private_dir, OTHER_UID, [])
    private_dir.chmod(0o700)


def test_postgres_data_dir_falls_back_outside_a_private_checkout(private_dir: Path) -> None:
    settings = infra.InfraSettings(state_dir=private_dir / ".state")
    data_dir = infra.postgres_data_dir(settings, OTHER_USER)
    assert data_dir == postgres.fallback_postgres_dir(settings.state_dir)
    assert data_dir.parent.parent == infra.PG_FALLBACK_ROOT
    private_dir.chmod(0o755)
    assert infra.postgres_data_dir(settings, OTHER_USER) == settings.state_dir / "postgres"
    assert infra.postgres_data_dir(settings, None) == settings.state_dir / "postgres"  # not root: own dir


def test_fallback_dir_is_stable_and_per_checkout() -> None:
    first = postgres.fallback_postgres_dir(Path("/tmp/tmp.abc/.state"))
    assert first == postgres.fallback_postgres_dir(Path("/tmp/tmp.abc/.state"))
    assert first != postgres.fallback_postgres_dir(Path("/tmp/tmp.xyz/.state"))
    assert first.name == "postgres"


def test_socket_dir_falls_back_to_tcp_only_on_long_paths() -> None:
    assert postgres.socket_dir_option(Path("/var/tmp/x/postgres"), 54320) == "/var/tmp/x/postgres"
    assert postgres.socket_dir_option(Path("/" + "d" * 120), 54320) == ""


def test_server_loads_pg_stat_statements_when_the_binaries_ship_it(tmp_path: Path) -> None:
    bindir = tmp_path / "15" / "bin"
    bindir.mkdir(parents=True)
    assert "shared_preload_libraries" not in postgres.server_options(bindir, Path("/var/tmp/x/postgres"), 54320)
    (tmp_path / "15" / "lib").mkdir()
    (tmp_path / "15" / "lib" / "pg_stat_statements.so").touch()
    options = postgres.server_options(bindir, Path("/var/tmp/x/postgres"), 54320)
    assert "-c shared_preload_libraries=pg_stat_statements" in options
    assert "-p 54320 -k /var/tmp/x/postgres" in options


def test_create_databases_sql_covers_every_service() -> None:
    sql = postgres.create_databases_sql()
    assert all(f"'{name}'" in sql for name in ("status_registry", "orders", "campaigns", "notifier"))
    assert sql.rstrip().endswith("\\gexec")


def test_describe_line() -> None:
    line = commands.describe("Kafka", None, "127.0.0.1:9092", Path("/d"), answers=True)
    assert line == "Kafka: not running, 127.0.0.1:9092 answers (not started by us), data /d"


def test_running_as_root_uses_the_postgres_account() -> None:
    user = pwd.struct_passwd(("postgres", "x", 101, 104, "", "/", "/bin/sh"))
    as_postgres = ["runuser", "-u", "postgres", "--", "pg_ctl", "status"]
    assert postgres.as_server_user(user, ["pg_ctl", "status"]) == as_postgres
    assert postgres.as_server_user(None, ["pg_ctl", "status"]) == ["pg_ctl", "status"]
    if os.geteuid() != 0:
        assert postgres.postgres_os_user() is None


@pytest.mark.infra
async def test_up_is_idempotent_and_creates_prefixed_topics(capsys: pytest.CaptureFixture[str]) -> None:
    """Against the real local broker: `up` reuses it, `status` sees it, topics get the contracts' layout."""
    settings = infra.InfraSettings()
    infra.up(settings)  # sync API called from a running loop, as an async fixture would
    infra.status(settings)
    out = capsys.readouterr().out
    assert "Kafka: running" in out or "answers (not started by us)" in out
    assert f"127.0.0.1:{settings.postgres_port} answers" in out

    bootstrap = infra.local_bootstrap(settings)
    prefix = f"t{uuid.uuid4().hex[:10]}."
    await infra.ensure_topics(bootstrap, prefix)
    await infra.ensure_topics(bootstrap, prefix)  # existing topics are skipped
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [prefixed(spec.topic, prefix) for spec in TOPIC_SPECS]
        described = {t["topic"]: t for t in await admin.describe_topics(names)}
        for spec in TOPIC_SPECS:
            assert len(described[prefixed(spec.topic, prefix)]["partitions"]) == spec.partitions
        compacted = prefixed(Topic.STATUS_DEFINITIONS, prefix)
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, compacted)])
        entries = response.to_object()["resources"][0]["config_entries"]
        assert {e["config_names"]: e["config_value"] for e in entries}["cleanup.policy"] == "compact"
        await infra.delete_topics(bootstrap, prefix)

        async def gone() -> bool:  # deletion completes asynchronously in the controller
            return not [name for name in await admin.list_topics() if name.startswith(prefix)]

        await wait_until(gone, timeout_s=30, what=f"the topics under {prefix} to be deleted")
    finally:
        await admin.close()


async def test_delete_topics_refuses_the_empty_prefix() -> None:
    with pytest.raises(ValueError, match="non-empty prefix"):
        await infra.delete_topics("127.0.0.1:1", "")
