"""PostgreSQL from the Debian server binaries (package `postgresql`), one data directory, one database per
service; as root the server runs as the `postgres` system user, which refuses root."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from devtools.infra.processes import (
    install_debian_package,
    process_alive,
    read_pid,
    run,
    say,
    tail_file,
    wait_until_reaped,
)
from devtools.infra.settings import LOCALHOST, InfraError, InfraSettings

SERVICE_DATABASES = ("status_registry", "orders", "campaigns", "notifier", "identity", "webhooks", "console")
PG_OS_USER = "postgres"  # PostgreSQL refuses to run as root; the Debian package creates this system user
PG_FALLBACK_ROOT = Path("/var/tmp/order-status-platform")
PG_START_TIMEOUT_S = 60


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
    install_debian_package("postgresql", "PostgreSQL server binaries not found")
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


def server_options(bindir: Path, data_dir: Path, port: int) -> str:
    """The server's command-line options. pg_stat_statements is loaded when the binaries ship it (Debian's do):
    `make bench` reads what each service's statements cost from it (it needs the library loaded at start; the
    bench creates the extension). Its table holds 10,000 statements, as the tests' many databases each add theirs."""
    options = (
        f"-p {port} -k {shlex.quote(socket_dir_option(data_dir, port))} -c listen_addresses={LOCALHOST}"
        " -c max_connections=200 -c shared_buffers=128MB"
    )
    if (bindir.parent / "lib" / "pg_stat_statements.so").is_file():
        options += " -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.max=10000"
    return options


def launch_postgres(bindir: Path, data_dir: Path, user: pwd.struct_passwd | None, port: int) -> None:
    """pg_ctl start and wait; pg_ctl detaches the server, its log goes to <data dir>/server.log."""
    options = server_options(bindir, data_dir, port)
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
