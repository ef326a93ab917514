"""`make run` / `make down` stop every service, whatever happens to the supervisor.

The supervisor runs here with fake services (a few lines of Python; one ignores SIGTERM), never the real
platform, and never touches Kafka or PostgreSQL. Every wait is bounded by a generous deadline; nothing is
asserted about how long anything took.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools import run

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")

GRACE_S = 1.0
FAKE_SERVICE = """
import signal, sys, time
if sys.argv[1] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a hung service: only SIGKILL ends it
def say(text):
    try:
        print(text, flush=True)
    except BrokenPipeError:
        pass  # like a service's logging: losing its output does not stop it
say("started")
while True:
    say("tick")  # output all along, so the supervisor keeps writing to its own
    time.sleep(0.05)
"""


def eventually(condition: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not after {timeout_s} s: {what}")
        time.sleep(0.05)


@pytest.fixture
def procfile(tmp_path: Path) -> Path:
    script = tmp_path / "fake_service.py"
    script.write_text(FAKE_SERVICE)
    path = tmp_path / "Procfile"
    path.write_text(f"# two fake services\nstubborn: python {script} stubborn\npolite: python {script} polite\n")
    return path


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"


@pytest.fixture
def supervisor(procfile: Path, run_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The supervisor as `make up` starts it, its output on a pipe as under `make run | tee run.log`."""
    command = [sys.executable, "-m", "devtools.run", "supervise", "--procfile", str(procfile)]
    process = subprocess.Popen(
        [*command, "--run-dir", str(run_dir), "--grace", str(GRACE_S)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    yield process
    for pid in [process.pid, *services_of(run_dir).values()]:  # whatever a failed test left behind
        if run.running(pid):
            os.kill(pid, signal.SIGKILL)
    process.wait(timeout=30)


def services_of(run_dir: Path) -> dict[str, int]:
    return {name: pid for name, pid in run.recorded_pids(run_dir).items() if name != run.SUPERVISOR}


def started(supervisor: subprocess.Popen[bytes], run_dir: Path) -> dict[str, int]:
    eventually(lambda: set(services_of(run_dir)) == {"stubborn", "polite"}, "both services started")
    assert supervisor.stdout is not None
    first_lines = {supervisor.stdout.readline().decode() for _ in range(4)}
    assert any(line.startswith("stubborn | ") for line in first_lines), first_lines  # their output, relayed
    return services_of(run_dir)


def all_gone(pids: Iterator[int] | list[int]) -> Callable[[], bool]:
    pids = list(pids)
    return lambda: not any(run.running(pid) for pid in pids)


def test_procfile_commands_run_with_this_interpreter(procfile: Path) -> None:
    commands = run.procfile_commands(procfile)
    assert list(commands) == ["stubborn", "polite"]
    assert commands["stubborn"][0] == sys.executable and commands["stubborn"][-1] == "stubborn"


def test_ctrl_c_after_the_output_pipe_closed_stops_every_service(
    supervisor: subprocess.Popen[bytes], run_dir: Path
) -> None:
    """`make run | tee run.log`, Ctrl-C: tee dies first; the supervisor must not die of the broken pipe."""
    services = started(supervisor, run_dir)
    assert supervisor.stdout is not None
    supervisor.stdout.close()  # tee is gone
    time.sleep(0.3)  # the services go on printing: the supervisor meets the broken pipe
    assert supervisor.poll() is None, supervisor.stderr.read() if supervisor.stderr else ""

    supervisor.send_signal(signal.SIGINT)

    assert supervisor.wait(timeout=30) == 0, supervisor.stderr.read() if supervisor.stderr else ""
    eventually(all_gone(services.values()), "every service stopped, the one ignoring SIGTERM included")
    assert list(run_dir.glob("*.pid")) == []


def test_services_die_with_a_killed_supervisor(supervisor: subprocess.Popen[bytes], run_dir: Path) -> None:
    services = started(supervisor, run_dir)

    supervisor.kill()  # no handler runs: only the kernel can stop the services now

    eventually(all_gone(services.values()), "every service killed with its supervisor")


def test_down_stops_a_hung_supervisor_and_a_service_ignoring_sigterm(
    supervisor: subprocess.Popen[bytes], run_dir: Path
) -> None:
    services = started(supervisor, run_dir)
    supervisor.send_signal(signal.SIGSTOP)  # hung: it will neither stop its services nor reap them

    run.down(run_dir, GRACE_S)

    assert all_gone([supervisor.pid, *services.values()])()
    assert list(run_dir.glob("*.pid")) == []


def test_down_kills_a_recorded_process_that_ignores_sigterm(run_dir: Path, procfile: Path) -> None:
    """Even one whose supervisor is gone (its pid file is all that is left)."""
    stubborn = subprocess.Popen(
        run.procfile_commands(procfile)["stubborn"], stdout=subprocess.DEVNULL, start_new_session=True
    )
    try:
        run_dir.mkdir()
        run.write_pid_file(run_dir, "orders", stubborn.pid)
        time.sleep(0.3)  # it has set its handler

        run.down(run_dir, GRACE_S)

        assert stubborn.wait(timeout=30) == -signal.SIGKILL
    finally:
        stubborn.kill()
        stubborn.wait(timeout=30)


def test_pid_files_never_name_another_process(run_dir: Path) -> None:
    run_dir.mkdir()
    (run_dir / "orders.pid").write_text(f"{os.getpid()} 1\n")  # our pid, but another start time: reused
    assert run.recorded_pids(run_dir) == {}
    assert not (run_dir / "orders.pid").exists()
    run.write_pid_file(run_dir, "orders", os.getpid())
    assert run.recorded_pids(run_dir) == {"orders": os.getpid()}


def test_instances_run_each_service_n_times_on_ports_of_their_own_and_die_with_the_supervisor(
    tmp_path: Path, run_dir: Path
) -> None:
    script = tmp_path / "port_service.py"
    script.write_text("import os, time\nprint(os.environ.get('HTTP_PORT', 'default'), flush=True)\ntime.sleep(600)\n")
    procfile = tmp_path / "Procfile"
    procfile.write_text(f"orders: python {script}\nnotifier: python {script}\nhelper: python {script}\n")
    command = [sys.executable, "-m", "devtools.run", "supervise", "--procfile", str(procfile)]
    supervisor = subprocess.Popen(
        [*command, "--run-dir", str(run_dir), "--grace", str(GRACE_S)],
        stdout=subprocess.PIPE,
        env=os.environ | {"INSTANCES": "2"},
        start_new_session=True,
    )
    try:
        names = {"orders", "orders.2", "notifier", "notifier.2", "helper"}  # only the platform's services twice
        eventually(lambda: set(services_of(run_dir)) == names, "every instance started")
        assert supervisor.stdout is not None
        prefixes = {supervisor.stdout.readline().decode().split("|")[0].strip() for _ in range(5)}
        assert prefixes == names  # each instance's output, relayed under its name
        services = services_of(run_dir)
        environments = {name: Path(f"/proc/{pid}/environ").read_bytes() for name, pid in services.items()}
        assert b"HTTP_PORT=8012\0" in environments["orders.2"] and b"HTTP_PORT=8014\0" in environments["notifier.2"]

        supervisor.kill()  # the second instances run through `env`, which execs: they die with it as well

        eventually(all_gone(services.values()), "every instance killed with its supervisor")
    finally:
        for pid in [supervisor.pid, *services_of(run_dir).values()]:
            if run.running(pid):
                os.kill(pid, signal.SIGKILL)
        supervisor.wait(timeout=30)
