"""Issue 34's cost measure on made-up /proc files, `ss` output and PostgreSQL counters: no platform runs."""

from __future__ import annotations

import os
from pathlib import Path

from devtools.bench_cost import (
    CLOCK_TICKS,
    PgCounters,
    Pipeline,
    Snapshot,
    Statement,
    Usage,
    parse_ss,
    phase_cost,
    process_tree,
    process_usage,
    socket_requests,
    stat_cpu_seconds,
    statement_deltas,
    tree_usage,
)


def stat_line(pid: int, parent: int, utime: int, stime: int, command: str = "python") -> str:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
    return f"{pid} ({command}) S {parent} 1 1 0 -1 4194304 100 0 0 0 {utime} {stime} 0 0 20 0 3 0\n"


def status_text(voluntary: int, involuntary: int) -> str:
    switches = f"voluntary_ctxt_switches:\t{voluntary}\nnonvoluntary_ctxt_switches:\t{involuntary}\n"
    return f"Name:\tpython\nState:\tS (sleeping)\n{switches}"


def fake_process(proc: Path, pid: int, parent: int, ticks: int, threads: dict[int, tuple[int, int]]) -> None:
    (proc / str(pid) / "task").mkdir(parents=True)
    (proc / str(pid) / "stat").write_text(stat_line(pid, parent, ticks, ticks))
    for tid, (voluntary, involuntary) in threads.items():
        (proc / str(pid) / "task" / str(tid)).mkdir()
        (proc / str(pid) / "task" / str(tid) / "status").write_text(status_text(voluntary, involuntary))


def test_a_command_with_spaces_and_parentheses_does_not_shift_the_fields() -> None:
    assert stat_cpu_seconds(stat_line(7, 1, 150, 50, command="a) (b c")) == 200 / CLOCK_TICKS


def test_a_process_tree_sums_cpu_and_every_threads_switches(tmp_path: Path) -> None:
    fake_process(tmp_path, 10, 1, ticks=100, threads={10: (30, 2), 11: (5, 1)})
    fake_process(tmp_path, 20, 10, ticks=50, threads={20: (7, 0)})  # a worker the service started
    fake_process(tmp_path, 30, 1, ticks=999, threads={30: (999, 999)})  # someone else's
    assert sorted(process_tree(10, tmp_path)) == [10, 20]
    assert process_usage(10, tmp_path) == Usage(200 / CLOCK_TICKS, 38)
    assert tree_usage(10, tmp_path) == Usage(300 / CLOCK_TICKS, 45)
    assert process_usage(99, tmp_path) == Usage()  # gone


def test_this_process_reads_from_the_real_proc() -> None:
    usage = tree_usage(os.getpid())
    assert usage.cpu_seconds > 0 and usage.switches > 0


SS_OUTPUT = """\
0      0      127.0.0.1:34568 127.0.0.1:9092 users:(("python",pid=22132,fd=17))
\t bbr wscale:1,10 rto:204 bytes_sent:71 segs_out:8 segs_in:5 data_segs_out:3 data_segs_in:3 lastsnd:104656
0      0      127.0.0.1:34610 127.0.0.1:9092 users:(("python",pid=22132,fd=16))
\t bbr wscale:1,10 rto:204 segs_out:221 segs_in:429 data_segs_out:217 data_segs_in:215 app_limited
0      0      127.0.0.1:40000 127.0.0.1:9092
\t bbr wscale:1,10 rto:204 segs_out:1 segs_in:1
"""


def test_ss_output_gives_each_connections_owner_and_data_segments() -> None:
    assert parse_ss(SS_OUTPUT) == {
        "127.0.0.1:34568": (22132, 3),
        "127.0.0.1:34610": (22132, 217),
        "127.0.0.1:40000": (0, 0),
    }


def test_requests_are_counted_per_process_and_a_new_connection_from_zero() -> None:
    before = {"a:1": (5, 10), "a:2": (6, 100), "a:3": (7, 40)}
    after = {"a:1": (5, 15), "a:2": (6, 130), "a:4": (5, 4)}  # a:3 closed, a:4 opened
    assert socket_requests(before, after) == {5: 9, 6: 30}
    assert socket_requests({"a:1": (5, 50)}, {"a:1": (8, 3)}) == {8: 3}  # the port reused by another process


def test_statement_deltas_skip_the_idle_and_restart_an_evicted_entry() -> None:
    before = {("db", "SELECT 1"): Statement(10, 5.0, 0), ("db", "INSERT"): Statement(50, 20.0, 9000)}
    after = {
        ("db", "SELECT 1"): Statement(10, 5.0, 0),
        ("db", "INSERT"): Statement(4, 1.0, 800),  # evicted and counted again since
        ("db", "UPDATE"): Statement(3, 0.5, 300),
    }
    assert statement_deltas(before, after) == {
        ("db", "INSERT"): Statement(4, 1.0, 800),
        ("db", "UPDATE"): Statement(3, 0.5, 300),
    }
    assert statement_deltas(None, after) == {}


def snapshot(at: float, scale: int, statements: dict[tuple[str, str], Statement] | None) -> Snapshot:
    return Snapshot(
        at=at,
        processes={"orders": Usage(1.0 * scale, 100 * scale), "notifier": Usage(0.5 * scale, 40 * scale)},
        backend_cpu={101: ("e1_orders", 0.4 * scale), 102: ("e1_notifier", 0.1 * scale)},
        server_cpu=0.1 * scale,
        infrastructure={"kafka": 2.0 * scale, "postgresql": 5.0 * scale},
        sockets={"a:1": (1, 100 * scale), "a:2": (2, 10 * scale), "b:9": (0, 7)},
        pg=PgCounters({"e1_orders": 50 * scale, "e1_notifier": 20 * scale}, 1000 * scale, statements),
    )


def test_a_phase_cost_per_event_and_per_second() -> None:
    pipeline = Pipeline({"orders": 1, "notifier": 2}, {"e1_orders": "orders", "e1_notifier": "notifier"})
    before = snapshot(0.0, 1, {("e1_orders", "BEGIN"): Statement(10, 0.1, 0)})
    end = snapshot(10.0, 2, None)
    settled = PgCounters(
        {"e1_orders": 150, "e1_notifier": 40},
        3000,
        {
            ("e1_orders", "BEGIN"): Statement(110, 1.1, 0),
            ("e1_orders", "SELECT  *\n FROM orders"): Statement(200, 40.0, 0),
            ("e1_notifier", "INSERT INTO messages"): Statement(100, 10.0, 50000),
        },
    )
    cost = phase_cost(before, end, settled, 100, pipeline)
    assert cost["cpu_seconds"] == {
        "orders": 1.0, "notifier": 0.5, "postgresql orders": 0.4, "postgresql notifier": 0.1,
        "postgresql server": 0.1, "kafka": 2.0, "postgresql all (other databases too)": 5.0,
    }  # fmt: skip
    assert cost["cpu_ms_per_event"] == {"services": 15.0, "postgresql": 6.0, "kafka": 20.0, "whole": 41.0}
    assert cost["core_percent"] == {"services": 15.0, "postgresql": 6.0, "services and postgresql": 21.0, "kafka": 20.0}
    assert cost["wakeups_per_second"] == {"orders": 10.0, "notifier": 4.0}
    assert cost["kafka_requests"] == {"orders": 100, "notifier": 10}
    assert cost["kafka_requests_per_event"] == 1.1
    assert cost["other_broker_connections"] == 1
    assert cost["transactions"] == {"orders": 100, "notifier": 20}  # read once settled, not at the end
    assert cost["statements"] == 300  # BEGIN is not a statement of the work
    assert cost["statements_by_service"] == {"orders": 200, "notifier": 100}
    assert cost["statement_wal_bytes_per_event"] == 500.0
    assert cost["cluster_wal_bytes"] == 2000
    assert cost["top_statements_by_calls"][0] == {
        "service": "orders", "query": "SELECT * FROM orders", "calls": 200, "ms": 40.0, "wal_bytes": 0
    }  # fmt: skip
    assert cost["top_statements_by_time"][0]["query"] == "SELECT * FROM orders"


def test_at_rest_nothing_is_per_event_and_without_pg_stat_statements_no_statement_is_counted() -> None:
    pipeline = Pipeline({"orders": 1, "notifier": 2}, {"e1_orders": "orders", "e1_notifier": "notifier"})
    cost = phase_cost(snapshot(0.0, 1, None), snapshot(60.0, 2, None), PgCounters({}, 1000), 0, pipeline)
    assert cost["cpu_ms_per_event"] == {"services": None, "postgresql": None, "kafka": None, "whole": None}
    assert cost["core_percent"]["services and postgresql"] == 3.5
    assert cost["statements"] is None and cost["statements_by_service"] is None
    assert cost["statement_wal_bytes_per_event"] is None
    assert cost["top_statements_by_calls"] == []
