"""`make run` / `make up` / `make down` / `make logs`: the platform as one, with the product's example.

A supervisor starts the services of the Procfile (and the console) as separate processes, prefixes their output with
their names and, once each answers `/readyz`, plays the example through public interfaces only, as an
integrator would: the demo partner's statuses over the registry API, the campaign over the campaigns API,
orders as events on `orders.inbound.v1`. Status changes are shown as they are published; each SMS is printed
by the notifier's console provider. `make run` stays in the foreground until Ctrl-C; `make up` starts the
supervisor in the background (logs in .state/run/platform.log) and `make down` stops it; should its example fail,
`make up` stops everything it started and says why in one line.

The example runs again on every start, after whatever a user did in the console meanwhile, so it only adds what
it lacks: the example's statuses that are missing (and those its orders and campaign use, restored if archived;
`devtools.scenario.add_example_statuses`), and its campaign when none of that name is left (activated when a
draft). It never archives a status, and leaves a user's statuses and an edited or paused campaign as they are.

`INSTANCES=2` runs each service twice (consumer groups split the partitions, the relays the outbox's slots), on
ports 8011-8014, 8016 and 8017 beside 8001-8004, 8006 (identity) and 8007 (webhooks; the console, 8005, runs once).

Stopping stops everything, whatever happens to the supervisor:

* Each service runs in its own process group (a Ctrl-C reaches the supervisor only, which stops the services
  in order) and dies with the supervisor: the kernel sends it SIGKILL when the supervisor exits for any
  reason (`PR_SET_PDEATHSIG`, Linux), including a `kill -9`.
* The supervisor stops on SIGINT, SIGTERM or SIGHUP: SIGTERM to every service, then SIGKILL to whatever is
  still there after `STOP_GRACE_S`. Its output may vanish (`make run | tee run.log` and Ctrl-C: tee dies
  first); it then goes on without printing rather than dying of a broken pipe.
* Every process it starts has a pid file in .state/run/ (pid and start time, so a reused pid is never
  signalled); `make down` signals them all itself, SIGTERM then SIGKILL after the grace, so a hung supervisor
  or a service that ignores SIGTERM cannot outlive it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from contracts.envelope import Envelope, decode
from contracts.inbound import OrderStatusReported, OrderUpserted
from contracts.orders import Customer, OrderStatusChanged
from contracts.statuses import StatusCodes
from contracts.topics import Topic
from devtools.scenario import DEMO_PARTNER, add_example_statuses
from devtools.tokens import IdentityTokens
from servicekit.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[4]
RUN_DIR = ROOT / ".state" / "run"
LOG_FILE = RUN_DIR / "platform.log"
SUPERVISOR = "supervisor"  # the name of its pid file, beside one per service
SERVICES = {
    "status-registry": 8001, "orders": 8002, "campaigns": 8003, "notifier": 8004, "identity": 8006, "webhooks": 8007
}  # fmt: skip
CONSOLE_PORT = 8005  # the partner console: one process (its users' sessions are signed cookies, any would do)
# What the "ready" line of a service points at, beside its address (the APIs': their documents and metrics).
READY_PAGES = {"console": "/login", "identity": "/docs  /asyncapi  /.well-known/jwks.json  /metrics"}
DEMO_USERS = (("marketer@demo.example", "marketer", DEMO_PARTNER), ("ops@platform.example", "ops", ""))
# `make up INSTANCES=2`: each service that many times, the same database and consumer groups, the ports of
# instance n ten above those of instance n - 1 (orders: 8002, 8012, ...).
INSTANCES = max(1, int(os.environ.get("INSTANCES") or 1))
STOP_GRACE_S = float(os.environ.get("STOP_GRACE_S", "10"))
RELAY_LINE_LIMIT = 1 << 20
KILL_WAIT_S = 5.0
READY_TIMEOUT_S = 90.0
DEMO_CAMPAIGN = {
    "name": "Отгружен и оплачен / Shipped and paid",
    "trigger": {"status_type": "delivery", "from": "any", "to": "shipped"},
    "filters": [{"kind": "order_status", "status_type": "payment", "op": "eq", "value": "paid"}],
    "template": "{{ customer.name | default: 'Здравствуйте' }}, заказ {{ order.id }} на {{ order.amount }} "
    "{{ order.currency }}: {{ to_status.name | downcase }}. Спасибо!",
    "sender": "DemoShop",
    "quiet_hours": "deliver_immediately",
}
# Every status code the demo's orders (`publish_orders`) and campaign name: restored if a user archived one.
DEMO_STATUS_CODES = frozenset(
    {"accepted", "at_pickup_point", "invoice_issued", "paid", "awaiting_payment", "in_progress", "shipped"}
)
# (name, phone, pays before shipping)
DEMO_CUSTOMERS = (("Анна", "+79161110001", True), ("Борис", "+79161110002", False), ("Вера", "+79161110003", True))


def _silence_stdout() -> None:
    """Our output's reader is gone (tee died at Ctrl-C): write to /dev/null from now on, instead of dying of
    a broken pipe half-way through stopping the services (Python's advice for EPIPE on stdout)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def emit(text: str) -> None:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except (BrokenPipeError, ConnectionResetError):
        _silence_stdout()


def say(message: str) -> None:
    emit(f"\033[1;36m[run]\033[0m {message}\n")


def services_env() -> dict[str, str]:
    # Quiet services: the terminal shows the example's status changes and SMS, not every request.
    return os.environ | {
        "PYTHONUNBUFFERED": "1",
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
        "TRACES_FILE": os.environ.get("TRACES_FILE", str(ROOT / ".state" / "traces" / "{service}.jsonl")),
        "CONSOLE_OUTBOX_FILE": os.environ.get("CONSOLE_OUTBOX_FILE", str(ROOT / ".state" / "notifier" / "sms.jsonl")),
        # A developer's webhook receiver listens on this machine: loopback endpoints are allowed here only.
        "WEBHOOKS_ALLOW_PRIVATE_TARGETS": os.environ.get("WEBHOOKS_ALLOW_PRIVATE_TARGETS", "true"),
    }


def procfile_commands(path: Path = ROOT / "Procfile") -> dict[str, list[str]]:
    """`name: command` lines; `python` is this interpreter (the project's environment)."""
    commands = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, command = line.split(":", 1)
            argv = shlex.split(command)
            commands[name.strip()] = [sys.executable, *argv[1:]] if argv[0] == "python" else argv
    return commands


def instances(commands: dict[str, list[str]], count: int = INSTANCES) -> dict[str, list[str]]:
    """Each service of `SERVICES` `count` times: `orders`, then `orders.2`... on their own HTTP ports."""
    every = dict(commands)
    for name, argv in commands.items():
        if name in SERVICES:
            for n in range(2, count + 1):
                every[f"{name}.{n}"] = ["env", f"HTTP_PORT={instance_port(name, n)}", *argv]
    return every


def instance_port(service: str, n: int) -> int:
    return SERVICES[service] + 10 * (n - 1)


# --- pid files: which processes `make down` may signal ---------------------------------------------------


def _start_time(pid: int) -> str | None:
    """The process' start time (clock ticks since boot), None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the name before ")" may hold spaces


def write_pid_file(run_dir: Path, name: str, pid: int) -> None:
    (run_dir / f"{name}.pid").write_text(f"{pid} {_start_time(pid) or ''}\n")


def recorded_pids(run_dir: Path) -> dict[str, int]:
    """Name -> pid of every process a pid file names that still runs (and is the same process)."""
    alive = {}
    for path in sorted(run_dir.glob("*.pid")):
        with contextlib.suppress(OSError, ValueError):
            pid_text, _, started = path.read_text().strip().partition(" ")
            pid = int(pid_text)
            if (started and _start_time(pid) == started) or (not started and _exists(pid)):
                alive[path.stem] = pid
                continue
        path.unlink(missing_ok=True)  # stale: that process is gone (or its pid was reused)
    return alive


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running(pid: int) -> bool:
    """Whether `pid` still runs: a zombie (dead, not yet reaped by a hung parent) does not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return _exists(pid)  # no /proc here
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _signal(pid: int, sig: signal.Signals, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def terminate(pids: Iterable[int], grace_s: float, *, groups: bool = True) -> None:
    """SIGTERM to each (its process group: a service leads its own), SIGKILL to those left after `grace_s`."""
    pids = list(pids)
    for pid in pids:
        _signal(pid, signal.SIGTERM, groups)
    deadline = time.monotonic() + grace_s
    while any(running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if running(pid):
            say(f"pid {pid} still running after {grace_s:g} s: SIGKILL")
            _signal(pid, signal.SIGKILL, groups)
    deadline = time.monotonic() + KILL_WAIT_S  # delivered at once, but acted on by the kernel a moment later
    while any(running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


# --- the supervisor -----------------------------------------------------------------------------------


PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform == "linux" else None


def _die_with(parent: int) -> Callable[[], None]:
    """Run in the child between fork and exec: SIGKILL it when `parent` exits, whatever the reason."""

    def set_parent_death_signal() -> None:
        if _LIBC is not None:
            _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the call above: too late for the kernel to tell
            os.kill(os.getpid(), signal.SIGKILL)

    return set_parent_death_signal


class Supervisor:
    """Starts the services, relays their output line by line, and stops them: SIGTERM, then SIGKILL."""

    def __init__(self, commands: dict[str, list[str]], run_dir: Path, grace_s: float) -> None:
        self.commands = commands
        self.run_dir = run_dir
        self.grace_s = grace_s
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self._pumps: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_pid_file(self.run_dir, SUPERVISOR, os.getpid())
        width = max(map(len, self.commands))
        for name, argv in self.commands.items():
            process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=ROOT,
                env=services_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                limit=RELAY_LINE_LIMIT,
                start_new_session=True,  # a Ctrl-C reaches the supervisor only; it stops the services in order
                preexec_fn=_die_with(os.getpid()),  # one system call between fork and exec
            )
            self.processes[name] = process
            write_pid_file(self.run_dir, name, process.pid)
            assert process.stdout is not None
            self._pumps.append(asyncio.create_task(self._relay(f"{name:<{width}} | ", process.stdout)))

    @staticmethod
    async def _relay(prefix: str, stream: asyncio.StreamReader) -> None:
        """Read to the end whatever happens to our own output, so that no service blocks on a full pipe."""
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # a line longer than the stream's limit: pass on what there is
                line = await stream.read(RELAY_LINE_LIMIT)
            if not line:
                return
            emit(prefix + line.decode(errors="replace"))

    async def first_exit(self) -> str:
        """The name of the first service to exit (the platform is incomplete without it)."""
        waits = {asyncio.ensure_future(p.wait()): name for name, p in self.processes.items()}
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return waits[done.pop()]

    def exited(self) -> str | None:
        return next((name for name, p in self.processes.items() if p.returncode is not None), None)

    async def stop(self) -> None:
        running = [p for p in self.processes.values() if p.returncode is None]
        for process in running:
            _signal(process.pid, signal.SIGTERM, group=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running)), self.grace_s)
        for process in running:
            if process.returncode is None:
                say(f"pid {process.pid} still running after {self.grace_s:g} s: SIGKILL")
                _signal(process.pid, signal.SIGKILL, group=True)
        await asyncio.gather(*(p.wait() for p in running))
        await asyncio.gather(*self._pumps, return_exceptions=True)
        for name in [*self.processes, SUPERVISOR]:
            (self.run_dir / f"{name}.pid").unlink(missing_ok=True)


async def supervise(
    commands: dict[str, list[str]], run_dir: Path, grace_s: float, example: Callable[[Supervisor], Any] | None
) -> None:
    """Run the services until a signal (or one of them exits), playing `example` meanwhile; then stop them."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stopping.set)
    supervisor = Supervisor(commands, run_dir, grace_s)
    tasks: list[asyncio.Task[Any]] = []
    failure: BaseException | None = None
    try:
        await supervisor.start()
        stop = asyncio.create_task(stopping.wait())
        exit_ = asyncio.create_task(supervisor.first_exit())
        tasks = [stop, exit_]
        if example is not None:
            tasks.append(asyncio.create_task(example(supervisor)))
        waiting = set(tasks)
        while not (stop.done() or exit_.done()):
            done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stop, exit_}:
                failure = task.exception()  # the example failed: stop everything, then say why
            if failure is not None:
                break
        if exit_.done():
            say(f"{exit_.result()} exited; stopping the others")
    finally:
        say("stopping")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await supervisor.stop()
        say("stopped")
    if failure is not None:
        raise SystemExit(f"the example failed: {failure_line(failure)}")


def failure_line(failure: BaseException) -> str:
    """Why the example failed, in one line: for a refused request, which one and the problem's detail."""
    if isinstance(failure, httpx.HTTPStatusError):
        request, response = failure.request, failure.response
        try:
            problem = response.json()
            reason = f"{problem.get('code', '')} {problem.get('detail') or problem.get('title') or ''}"
        except (ValueError, AttributeError):
            reason = response.text[:300]
        text = f"{request.method} {request.url} answered {response.status_code}: {reason}"
    elif isinstance(failure, SystemExit):
        text = str(failure.code)
    elif isinstance(failure, KeyboardInterrupt):
        text = "interrupted"
    else:
        text = str(failure) or type(failure).__name__
    return " ".join(text.split())


async def wait_until_ready(exited: Callable[[], str | None]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = {
        name if n == 1 else f"{name}.{n}": instance_port(name, n) for name in SERVICES for n in range(1, INSTANCES + 1)
    } | {"console": CONSOLE_PORT}
    async with httpx.AsyncClient(timeout=1) as client:
        while pending:
            if (gone := exited()) is not None:
                raise SystemExit(f"{gone} exited; see the log above")
            if time.monotonic() > deadline:
                raise SystemExit(f"not ready after {READY_TIMEOUT_S:.0f} s: {', '.join(pending)}")
            for name, port in list(pending.items()):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        pages = READY_PAGES.get(name.split(".")[0], "/docs  /asyncapi  /metrics")
                        say(f"{name:<15} ready: http://127.0.0.1:{port}{pages}")
                        del pending[name]
            await asyncio.sleep(0.3)


def client(port: int, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


async def define_statuses(registry: httpx.AsyncClient) -> None:
    """The example's statuses beside whatever a user added in the console since the last run (never archived)."""
    added = await add_example_statuses(registry, DEMO_STATUS_CODES)
    say(
        f"statuses of partner '{DEMO_PARTNER}': {len(added.created)} created, {len(added.restored)} restored, "
        f"{len(added.kept)} there already (left as they are; other statuses untouched)"
    )
    for status in added.statuses:
        flags = " (initial)" if status["is_initial"] else ""
        english = status["localized_names"].get("en", "")
        say(f"    {status['type']:<9} {status['code']:<18} {status['name']} / {english}{flags}")


async def define_campaign(campaigns: httpx.AsyncClient) -> str:
    """The demo campaign, found by its name: created and activated when there is none (archived ones do not count),
    activated when a draft; otherwise left exactly as it is, a user's edits and a pause included."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 500}
    while True:
        page = (await campaigns.get("/v1/campaigns", params=params)).raise_for_status().json()
        items += [c for c in page["items"] if c["name"] == DEMO_CAMPAIGN["name"] and c["state"] != "archived"]
        if not page["next_cursor"]:
            break
        params["cursor"] = page["next_cursor"]
    campaign = next((c for c in items if c["state"] == "active"), items[0] if items else None)
    if campaign is None:  # the registry's statuses are known at once (read-your-writes): no retry
        campaign = (await campaigns.post("/v1/campaigns", json=DEMO_CAMPAIGN)).raise_for_status().json()
    if campaign["state"] == "draft":
        campaign = (await campaigns.post(f"/v1/campaigns/{campaign['id']}/activate")).raise_for_status().json()
    if campaign["state"] == "active":
        say(f"campaign '{DEMO_CAMPAIGN['name']}' active: delivery -> shipped, payment is paid -> SMS")
    else:
        say(f"campaign '{DEMO_CAMPAIGN['name']}' is {campaign['state']} (a user's choice, left so): no SMS expected")
    return str(campaign["id"])


async def create_console_users() -> None:
    """The demo partner's marketer and a platform operator, with fresh passwords each run (printed, like the token)."""
    say(f"console: http://127.0.0.1:{CONSOLE_PORT}/login")
    for email, role, partner in DEMO_USERS:
        password = await asyncio.to_thread(console_user, email, role, partner)
        where = f"partner '{partner}'" if partner else "ops pages, all partners"
        say(f"    {role:<8} {email:<24} password {password}  ({where})")


def console_user(email: str, role: str, partner: str) -> str:
    """`make user`'s command (a process: devtools never imports a service), with a password to keep; returns it."""
    argv = [sys.executable, "-m", "console.cli", "--email", email, "--role", role, "--partner", partner, "--keep"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"creating the console user {email} failed:\n{done.stderr}")
    return done.stdout.split("password: ", 1)[1].split()[0]


async def publish_orders(settings: ServiceSettings) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_idempotence=True)
    await producer.start()
    stamp, now = datetime.now(UTC).strftime("%H%M%S"), datetime.now(UTC)
    try:
        for n, (name, phone, pays) in enumerate(DEMO_CUSTOMERS, start=1):
            order_id = f"demo-{stamp}-{n}"
            journey: list[Any] = [
                OrderUpserted(
                    order_id=order_id,
                    customer=Customer(id=f"customer-{n}", phone=phone, name=name, sms_consent=True),
                    amount=f"{1490 * n}.00",
                    currency="RUB",
                    placed_at=now,
                    occurred_at=now,
                    source_sequence=1,
                    statuses=StatusCodes(general="accepted", delivery="at_pickup_point", payment="invoice_issued"),
                ),
                *(["paid"] if pays else ["awaiting_payment"]),
                "in_progress",
                "shipped",
            ]
            for seq, step in enumerate(journey, start=1):
                data = step if isinstance(step, OrderUpserted) else OrderStatusReported(
                    order_id=order_id, code=step, occurred_at=now + timedelta(seconds=seq), source_sequence=seq
                )  # fmt: skip
                envelope = Envelope.wrap(data, source="/demo-shop", partner_id=DEMO_PARTNER)
                await producer.send_and_wait(
                    settings.topic(Topic.ORDERS_INBOUND), envelope.to_bytes(), key=envelope.key()
                )
        say(f"published {len(DEMO_CUSTOMERS)} orders to orders.inbound.v1 (Анна and Вера pay before shipping,")
        say("Борис does not: two SMS are expected)")
    finally:
        await producer.stop()


async def show_status_changes(settings: ServiceSettings) -> None:
    """Print each status change as it is published, readably."""
    consumer = AIOKafkaConsumer(
        settings.topic(Topic.ORDER_STATUS_CHANGED), bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="latest", enable_auto_commit=False,
    )  # fmt: skip
    await consumer.start()
    try:
        async for record in consumer:
            event = decode(record.value or b"", OrderStatusChanged).data
            before = event.from_status.name if event.from_status else "—"
            change = f"{event.status_type}: {before} -> {event.to_status.name} (#{event.sequence})"
            say(f"\033[33mstatus\033[0m {event.order_id} {change}")
    finally:
        await consumer.stop()


async def play(exited: Callable[[], str | None]) -> None:
    settings = ServiceSettings()
    await wait_until_ready(exited)
    token = await IdentityTokens(f"http://127.0.0.1:{SERVICES['identity']}").token(DEMO_PARTNER)
    watcher = asyncio.create_task(show_status_changes(settings))
    await asyncio.sleep(1)  # the watcher joins before the first change
    async with client(SERVICES["status-registry"], token) as registry:
        await define_statuses(registry)
    async with client(SERVICES["campaigns"], token) as campaigns:
        await define_campaign(campaigns)
    await publish_orders(settings)
    say(f"demo token (every scope, 15 minutes; `make token PARTNER=demo` gives another): {token}")
    say("SMS appear below as the notifier's console provider sends them (also in .state/notifier/sms.jsonl,")
    say(f"and at GET http://127.0.0.1:{SERVICES['notifier']}/v1/messages with the token)")
    await create_console_users()
    await asyncio.sleep(8)
    watcher.cancel()


async def play_then_wait(supervisor: Supervisor) -> None:
    try:
        await play(supervisor.exited)
    except SystemExit as exc:  # raised in a task, it would escape the event loop past the supervisor's stop
        raise RuntimeError(exc.code) from None
    say("running; Ctrl-C stops the services (make infra-down stops Kafka and PostgreSQL)")
    await asyncio.Event().wait()


def running_pid(run_dir: Path = RUN_DIR) -> int | None:
    return recorded_pids(run_dir).get(SUPERVISOR) if run_dir.is_dir() else None


def foreground() -> None:
    if (pid := running_pid()) is not None:
        raise SystemExit(f"already running (supervisor {pid}); make down stops it")
    asyncio.run(supervise(instances(procfile_commands()), RUN_DIR, STOP_GRACE_S, play_then_wait))


def background(procfile: Path, run_dir: Path, grace_s: float) -> None:
    """What `make up` leaves running: the supervisor alone, its output in the log."""
    asyncio.run(supervise(instances(procfile_commands(procfile)), run_dir, grace_s, None))


def up(
    procfile: Path = ROOT / "Procfile",
    run_dir: Path = RUN_DIR,
    grace_s: float = STOP_GRACE_S,
    example: Callable[[Callable[[], str | None]], Coroutine[Any, Any, None]] = play,
) -> None:
    """Start the supervisor in the background and play `example`; should that fail (or be interrupted), stop
    everything started here before saying why in one line: `make up` succeeds or leaves nothing behind."""
    if (pid := running_pid(run_dir)) is not None:
        say(f"already running (supervisor {pid}); make logs follows it, make down stops it")
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    log_file = run_dir / LOG_FILE.name
    argv = ["supervise", "--procfile", str(procfile), "--run-dir", str(run_dir), "--grace", str(grace_s)]
    with log_file.open("ab") as log:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "devtools.run", *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives this command and the terminal
        )
    write_pid_file(run_dir, SUPERVISOR, supervisor.pid)  # at once, for a second `make up` or `make down`

    def exited() -> str | None:
        return f"the supervisor (log: {log_file})" if supervisor.poll() is not None else None

    try:
        asyncio.run(example(exited))
    except BaseException as failure:  # Ctrl-C included: nothing may outlive a failed `make up`
        say("make up failed: stopping everything it started")
        down(run_dir, grace_s)
        raise SystemExit(f"make up failed: {failure_line(failure)}") from None
    say(f"running in the background (logs: {log_file}); make logs follows them, make down stops everything")


def down(run_dir: Path = RUN_DIR, grace_s: float = STOP_GRACE_S) -> None:
    """Stop the supervisor and every service it started, even when the supervisor is hung or gone.

    SIGTERM to all at once (the supervisor, and each service's group directly), SIGKILL to what is left
    after the grace; the services are killed before the supervisor, whose death would kill them anyway.
    """
    pids = recorded_pids(run_dir) if run_dir.is_dir() else {}
    if not pids:
        say("not running")
        return
    supervisor = pids.pop(SUPERVISOR, None)
    if supervisor is not None:
        _signal(supervisor, signal.SIGTERM, group=False)
    terminate(pids.values(), grace_s)
    if supervisor is not None:
        terminate([supervisor], grace_s, groups=False)
    for path in run_dir.glob("*.pid"):
        path.unlink(missing_ok=True)
    say("stopped")


def logs() -> None:
    if not LOG_FILE.exists():
        raise SystemExit("no logs yet: make up first")
    with contextlib.suppress(KeyboardInterrupt):
        subprocess.run(["tail", "-n", "100", "-F", str(LOG_FILE)], check=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.run")
    commands = ("foreground", "up", "down", "logs", "supervise")
    parser.add_argument("command", nargs="?", default="foreground", choices=commands)
    parser.add_argument("--procfile", type=Path, default=ROOT / "Procfile", help="supervise: the services")
    parser.add_argument("--run-dir", type=Path, default=RUN_DIR, help="supervise, down: where the pid files are")
    parser.add_argument("--grace", type=float, default=STOP_GRACE_S, help="seconds between SIGTERM and SIGKILL")
    args = parser.parse_args(argv)
    if args.command == "supervise":
        background(args.procfile, args.run_dir, args.grace)
    elif args.command == "down":
        down(args.run_dir, args.grace)
    else:
        {"foreground": foreground, "up": up, "logs": logs}[args.command]()


if __name__ == "__main__":
    main()
