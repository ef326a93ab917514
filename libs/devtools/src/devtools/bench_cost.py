"""Issue 34: what a pipeline (the platform, or the floor) costs per upstream event at a fixed rate and at rest,
measured from outside around a phase. Linux only (/proc, `ss`).

- CPU seconds of each pipeline process and its children (/proc/<pid>/stat: utime + stime), of the PostgreSQL
  backends serving the pipeline's databases (pids from pg_stat_activity, by database = by service), of the
  server's own processes (postmaster, checkpointer, WAL writer...: no database), of every PostgreSQL process
  (other databases' backends too: the server is shared with the tests) and of the Kafka broker.
- Wake-ups: voluntary + involuntary context switches of every thread of each process (/proc/<pid>/task/*/status).
- PostgreSQL: transactions per database (pg_stat_database xact_commit + xact_rollback), statements, their time and
  their WAL bytes per database and per statement (pg_stat_statements, when the server loaded it), and the
  cluster's WAL bytes (pg_stat_wal: other databases' writes too). pg_stat_database and pg_stat_wal are flushed by
  each backend at most every second, and only after PGSTAT_IDLE_INTERVAL (10 s) once it is idle: a phase's
  counters are read `PG_STATS_LAG_S` after its end (its CPU is not).
- Kafka requests: data segments each pipeline process sent to the broker over its connections (`ss -ti`,
  data_segs_out): one per request, since each request is one write well below the loopback MSS (64 KiB); a
  connection opened and closed within the phase is not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from devtools.bench_accounting import infrastructure_cpu

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PG_STATS_LAG_S = 11.0
TOP_STATEMENTS = 8
UTILITY = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|START TRANSACTION|SAVEPOINT|RELEASE)\b", re.IGNORECASE)


# --- /proc -------------------------------------------------------------------------------------------------
def stat_fields(stat: str) -> list[str]:
    """The fields of a /proc/<pid>/stat line after the command (which may hold spaces and parentheses)."""
    return stat.rsplit(")", 1)[1].split()


def stat_cpu_seconds(stat: str) -> float:
    fields = stat_fields(stat)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def stat_parent(stat: str) -> int:
    return int(stat_fields(stat)[1])


def status_switches(status: str) -> int:
    """Voluntary + involuntary context switches of one thread, from its /proc/.../status."""
    wanted = ("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")
    return sum(int(line.split()[1]) for line in status.splitlines() if line.startswith(wanted))


def process_tree(pid: int, proc: Path = PROC) -> list[int]:
    """`pid` and its descendants still running (a service's worker processes are its cost too)."""
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                children.setdefault(stat_parent((entry / "stat").read_text()), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children.get(current, [])
    return tree


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float = 0.0
    switches: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.cpu_seconds + other.cpu_seconds, self.switches + other.switches)

    def __sub__(self, other: Usage) -> Usage:
        return Usage(self.cpu_seconds - other.cpu_seconds, self.switches - other.switches)


def process_usage(pid: int, proc: Path = PROC) -> Usage:
    """CPU seconds (all its threads, live or gone) and context switches (its live threads) of one process; nothing
    for a process that is gone."""
    try:
        cpu = stat_cpu_seconds((proc / str(pid) / "stat").read_text())
        switches = 0
        for task in (proc / str(pid) / "task").iterdir():
            with contextlib.suppress(OSError):
                switches += status_switches((task / "status").read_text())
    except OSError:
        return Usage()
    return Usage(cpu, switches)


def tree_usage(pid: int, proc: Path = PROC) -> Usage:
    total = Usage()
    for member in process_tree(pid, proc):
        total += process_usage(member, proc)
    return total


# --- Kafka requests (ss) -----------------------------------------------------------------------------------
ENDPOINT = re.compile(r"\S+:\d+")


def parse_ss(text: str) -> dict[str, tuple[int, int]]:
    """`ss -tinpH` output -> local endpoint -> (owning pid, data segments sent). A socket no process owns (pid 0)
    is kept, so other clients of the broker can be counted."""
    sockets: dict[str, tuple[int, int]] = {}
    local = ""
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            endpoints = ENDPOINT.findall(line)
            local = endpoints[0] if endpoints else ""
            owner = re.search(r"pid=(\d+)", line)
            sockets[local] = (int(owner[1]) if owner else 0, 0)
        elif local in sockets:
            sent = re.search(r"\bdata_segs_out:(\d+)", line)
            sockets[local] = (sockets[local][0], int(sent[1]) if sent else 0)
    return sockets


def broker_sockets(port: int) -> dict[str, tuple[int, int]]:
    """Every established client connection to the broker on this machine."""
    done = subprocess.run(
        ["ss", "-tinpH", "state", "established", f"( dport = :{port} )"], capture_output=True, text=True, check=False
    )
    return parse_ss(done.stdout)


# --- PostgreSQL --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Statement:
    calls: int
    milliseconds: float
    wal_bytes: int


@dataclass
class PgCounters:
    """Counters that PostgreSQL flushes late (transactions, cluster WAL) and those it keeps at once (statements)."""

    transactions: dict[str, int] = field(default_factory=dict)  # database -> commits + rollbacks
    wal_bytes: int = 0  # the whole cluster's
    statements: dict[tuple[str, str], Statement] | None = None  # (database, query) -> totals; None: not loaded


STATEMENTS_SQL = """
SELECT d.datname, s.query, sum(s.calls)::bigint, sum(s.total_exec_time)::float8, sum(s.wal_bytes)::bigint
FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
WHERE d.datname = ANY($1::text[]) AND s.toplevel
GROUP BY d.datname, s.query
"""


async def statements_available(conn: asyncpg.Connection) -> bool:
    """Whether the server loaded pg_stat_statements (shared_preload_libraries; devtools.infra starts it so); the
    extension is then created in the database the bench reads from."""
    libraries = str(await conn.fetchval("SHOW shared_preload_libraries"))
    if "pg_stat_statements" not in libraries:
        return False
    await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return True


async def pg_counters(conn: asyncpg.Connection, databases: list[str], statements: bool) -> PgCounters:
    rows = await conn.fetch(
        "SELECT datname, xact_commit + xact_rollback FROM pg_stat_database WHERE datname = ANY($1::text[])", databases
    )
    counters = PgCounters(
        {row[0]: int(row[1]) for row in rows}, int(await conn.fetchval("SELECT wal_bytes FROM pg_stat_wal"))
    )
    if statements:
        counters.statements = {
            (row[0], row[1]): Statement(int(row[2]), float(row[3]), int(row[4]))
            for row in await conn.fetch(STATEMENTS_SQL, databases)
        }
    return counters


async def backends(conn: asyncpg.Connection) -> tuple[dict[int, str], list[int]]:
    """PostgreSQL's processes: client backends and autovacuum workers by database, and the server's own (no
    database, plus the postmaster)."""
    rows = await conn.fetch("SELECT pid, datname FROM pg_stat_activity")
    by_database = {int(row[0]): str(row[1]) for row in rows if row[1] is not None}
    own = [int(row[0]) for row in rows if row[1] is None]
    postmaster = await conn.fetchval("SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'")
    with contextlib.suppress(OSError, TypeError):
        own.append(stat_parent((PROC / str(postmaster) / "stat").read_text()))
    return by_database, own


# --- a phase -----------------------------------------------------------------------------------------------
@dataclass
class Snapshot:
    at: float
    processes: dict[str, Usage]  # pipeline process name -> usage so far
    backend_cpu: dict[int, tuple[str, float]]  # PostgreSQL pid -> (database, CPU seconds so far)
    server_cpu: float  # PostgreSQL's own processes
    infrastructure: dict[str, float]  # "kafka", "postgresql" (all of its processes)
    sockets: dict[str, tuple[int, int]]  # every client connection to the broker
    pg: PgCounters


@dataclass
class Pipeline:
    """What is measured: the pipeline's processes by name, and its databases with the service each serves."""

    processes: dict[str, int]
    databases: dict[str, str]


@dataclass
class CostMeter:
    dsn: str
    kafka_port: int
    pipeline: Pipeline
    statements: bool = False

    async def snapshot(self, conn: asyncpg.Connection) -> Snapshot:
        databases = list(self.pipeline.databases)
        by_database, own = await backends(conn)
        return Snapshot(
            at=time.monotonic(),
            processes={name: tree_usage(pid) for name, pid in self.pipeline.processes.items()},
            backend_cpu={
                pid: (database, process_usage(pid).cpu_seconds)
                for pid, database in by_database.items()
                if database in self.pipeline.databases
            },
            server_cpu=sum(process_usage(pid).cpu_seconds for pid in own),
            infrastructure=infrastructure_cpu(),
            sockets=broker_sockets(self.kafka_port),
            pg=await pg_counters(conn, databases, self.statements),
        )

    @contextlib.asynccontextmanager
    async def phase(self, events: int, into: dict[str, Any], settle_s: float = PG_STATS_LAG_S) -> AsyncIterator[None]:
        """Measure the block: its CPU, wake-ups and Kafka requests up to its end, PostgreSQL's counters
        `settle_s` later (their flush lag), all per upstream event (`events`) and per second, into `into`."""
        conn = await asyncpg.connect(self.dsn)
        try:
            self.statements = await statements_available(conn)
            before = await self.snapshot(conn)
            yield
            end = await self.snapshot(conn)
            await asyncio.sleep(settle_s)
            settled = await pg_counters(conn, list(self.pipeline.databases), self.statements)
        finally:
            await conn.close()
        into |= phase_cost(before, end, settled, events, self.pipeline, settle_s)


def socket_requests(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict[int, int]:
    """Data segments sent to the broker per owning pid between two `ss` readings (a new connection from zero)."""
    sent: dict[int, int] = {}
    for local, (pid, segments) in after.items():
        earlier = before.get(local)
        start = earlier[1] if earlier and earlier[0] == pid else 0
        sent[pid] = sent.get(pid, 0) + max(0, segments - start)
    return sent


def statement_deltas(
    before: dict[tuple[str, str], Statement] | None, after: dict[tuple[str, str], Statement] | None
) -> dict[tuple[str, str], Statement]:
    """What each statement did between two readings (one evicted meanwhile restarts from zero)."""
    if before is None or after is None:
        return {}
    deltas = {}
    for key, now in after.items():
        was = before.get(key, Statement(0, 0.0, 0))
        if now.calls < was.calls:
            was = Statement(0, 0.0, 0)
        if now.calls > was.calls:
            deltas[key] = Statement(
                now.calls - was.calls, now.milliseconds - was.milliseconds, now.wal_bytes - was.wal_bytes
            )
    return deltas


def _per(value: float, count: float, digits: int = 3) -> float | None:
    return round(value / count, digits) if count else None


def phase_cost(
    before: Snapshot, end: Snapshot, settled: PgCounters, events: int, pipeline: Pipeline, settled_after_s: float = 0.0
) -> dict[str, Any]:
    """The phase's cost: absolute, per upstream event (None at rest), per second. `settled` are PostgreSQL's counters
    read `settled_after_s` after the phase's end."""
    wall_s = end.at - before.at
    processes = {name: end.processes[name] - before.processes.get(name, Usage()) for name in end.processes}
    by_service = dict.fromkeys(pipeline.databases.values(), 0.0)
    for pid, (database, cpu) in end.backend_cpu.items():
        earlier = before.backend_cpu.get(pid)
        by_service[pipeline.databases[database]] += cpu - (earlier[1] if earlier else 0.0)
    backends_cpu = sum(by_service.values())
    server_cpu = end.server_cpu - before.server_cpu
    services_cpu = sum(u.cpu_seconds for u in processes.values())
    kafka_cpu = end.infrastructure["kafka"] - before.infrastructure["kafka"]
    postgresql_cpu = backends_cpu + server_cpu
    whole = services_cpu + postgresql_cpu + kafka_cpu
    requests = socket_requests(before.sockets, end.sockets)
    pids = {pid: name for name, pid in pipeline.processes.items()}
    kafka_requests = {name: requests.get(pid, 0) for pid, name in pids.items()}
    transactions = {
        service: settled.transactions.get(database, 0) - before.pg.transactions.get(database, 0)
        for database, service in pipeline.databases.items()
    }
    statements = statement_deltas(before.pg.statements, settled.statements)
    statement_rows: list[dict[str, Any]] = [
        {"service": pipeline.databases[database], "query": " ".join(query.split())[:160], "calls": s.calls,
         "ms": round(s.milliseconds, 1), "wal_bytes": s.wal_bytes}
        for (database, query), s in statements.items()
    ]  # fmt: skip
    counted = [row for row in statement_rows if not UTILITY.match(str(row["query"]))]
    total_statements = sum(int(row["calls"]) for row in counted) if settled.statements is not None else None
    return {
        "events": events,
        "wall_seconds": round(wall_s, 2),
        "pg_counters_read_after_s": round(settled_after_s, 1),
        "cpu_seconds": {name: round(u.cpu_seconds, 3) for name, u in processes.items()}
        | {f"postgresql {service}": round(cpu, 3) for service, cpu in by_service.items()}
        | {"postgresql server": round(server_cpu, 3), "kafka": round(kafka_cpu, 3),
           "postgresql all (other databases too)": round(end.infrastructure["postgresql"]
                                                         - before.infrastructure["postgresql"], 3)},
        "cpu_ms_per_event": {
            "services": _per(1000 * services_cpu, events), "postgresql": _per(1000 * postgresql_cpu, events),
            "kafka": _per(1000 * kafka_cpu, events), "whole": _per(1000 * whole, events),
        },
        "core_percent": {
            "services": _per(100 * services_cpu, wall_s, 2), "postgresql": _per(100 * postgresql_cpu, wall_s, 2),
            "services and postgresql": _per(100 * (services_cpu + postgresql_cpu), wall_s, 2),
            "kafka": _per(100 * kafka_cpu, wall_s, 2),
        },
        "wakeups_per_second": {name: _per(u.switches, wall_s, 1) for name, u in processes.items()},
        "kafka_requests": kafka_requests,
        "kafka_requests_per_event": _per(sum(kafka_requests.values()), events),
        "other_broker_connections": sum(1 for pid, _ in end.sockets.values() if pid not in pids),
        "transactions": transactions,
        "transactions_per_event": _per(sum(transactions.values()), events),
        "statements": total_statements,
        "statements_per_event": _per(total_statements, events) if total_statements is not None else None,
        "statements_by_service": {
            service: sum(int(r["calls"]) for r in counted if r["service"] == service)
            for service in pipeline.databases.values()
        } if settled.statements is not None else None,
        "statement_wal_bytes_per_event": _per(sum(int(r["wal_bytes"]) for r in statement_rows), events, 1)
        if settled.statements is not None
        else None,
        "cluster_wal_bytes": settled.wal_bytes - before.pg.wal_bytes,
        "cluster_wal_bytes_per_event": _per(settled.wal_bytes - before.pg.wal_bytes, events, 1),
        "top_statements_by_calls": sorted(statement_rows, key=lambda r: -int(r["calls"]))[:TOP_STATEMENTS],
        "top_statements_by_time": sorted(statement_rows, key=lambda r: -float(r["ms"]))[:TOP_STATEMENTS],
    }  # fmt: skip


async def broker_alone(seconds: float, port: int) -> dict[str, Any]:
    """The broker's CPU with none of the bench's clients (before any pipeline starts): what the rest phase's Kafka
    CPU compares with. Other clients on the machine (the tests) are counted, not excluded."""
    before, started = infrastructure_cpu()["kafka"], time.monotonic()
    await asyncio.sleep(seconds)
    kafka_cpu, wall_s = infrastructure_cpu()["kafka"] - before, time.monotonic() - started
    return {"seconds": round(wall_s, 1), "kafka_cpu_seconds": round(kafka_cpu, 3),
            "kafka_core_percent": round(100 * kafka_cpu / wall_s, 2),
            "other_broker_connections": len(broker_sockets(port))}  # fmt: skip
