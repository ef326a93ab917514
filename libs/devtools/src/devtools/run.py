"""`make run` / `make up` / `make down` / `make logs`: the platform as one, with the product's example.

The four services run as separate processes under honcho (the Procfile). Once each answers
`/readyz`, the example is played through public interfaces only, as an integrator would: the demo
partner's statuses over the registry API, the campaign over the campaigns API, orders as events on
`orders.inbound.v1`. Status changes are shown as they are published; each SMS is printed by the
notifier's console provider. `make run` stays in the foreground until Ctrl-C; `make up` does the same
in the background (logs in .state/run/platform.log) and `make down` stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
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
from devtools.scenario import DEMO_PARTNER, example_status_list
from servicekit.auth import issue_token
from servicekit.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[4]
RUN_DIR = ROOT / ".state" / "run"
PID_FILE, LOG_FILE = RUN_DIR / "honcho.pid", RUN_DIR / "platform.log"
SERVICES = {"status-registry": 8001, "orders": 8002, "campaigns": 8003, "notifier": 8004}
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
# (name, phone, pays before shipping)
DEMO_CUSTOMERS = (("Анна", "+79161110001", True), ("Борис", "+79161110002", False), ("Вера", "+79161110003", True))


def say(message: str) -> None:
    print(f"\033[1;36m[run]\033[0m {message}", flush=True)


def services_env() -> dict[str, str]:
    # Quiet services: the terminal shows the example's status changes and SMS, not every request.
    return os.environ | {
        "PYTHONUNBUFFERED": "1",
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
        "TRACES_FILE": os.environ.get("TRACES_FILE", str(ROOT / ".state" / "traces" / "{service}.jsonl")),
        "CONSOLE_OUTBOX_FILE": os.environ.get("CONSOLE_OUTBOX_FILE", str(ROOT / ".state" / "notifier" / "sms.jsonl")),
    }


def start_processes(log: Any = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "honcho", "start", "-f", str(ROOT / "Procfile"), "-d", str(ROOT)],
        env=services_env(),
        stdout=log,
        stderr=subprocess.STDOUT if log else None,
        start_new_session=True,  # its own process group: stopped as a whole, Ctrl-C handled here
    )


def stop_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
        for _ in range(100):
            time.sleep(0.2)
            os.killpg(pid, 0)  # raises once the group is gone
        os.killpg(pid, signal.SIGKILL)


async def wait_until_ready(processes: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = dict(SERVICES)
    async with httpx.AsyncClient(timeout=1) as client:
        while pending:
            if processes.poll() is not None:
                raise SystemExit(f"the services exited with code {processes.returncode}; see the log above")
            if time.monotonic() > deadline:
                raise SystemExit(f"not ready after {READY_TIMEOUT_S:.0f} s: {', '.join(pending)}")
            for name, port in list(pending.items()):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        say(f"{name:<15} ready: http://127.0.0.1:{port}/docs  /asyncapi  /metrics")
                        del pending[name]
            await asyncio.sleep(0.3)


def client(port: int, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


async def define_statuses(token: str) -> None:
    async with client(SERVICES["status-registry"], token) as registry:
        result = (
            (await registry.put("/v1/statuses", json={"statuses": example_status_list()})).raise_for_status().json()
        )
    say(f"statuses of partner '{DEMO_PARTNER}': {len(result['created'])} created, {len(result['unchanged'])} unchanged")
    for status in result["statuses"]:
        flags = " (initial)" if status["is_initial"] else ""
        english = status["localized_names"].get("en")
        say(f"    {status['type']:<9} {status['code']:<18} {status['name']} / {english}{flags}")


async def define_campaign(token: str) -> str:
    async with client(SERVICES["campaigns"], token) as campaigns:
        existing = (await campaigns.get("/v1/campaigns")).raise_for_status().json()["items"]
        campaign = next((c for c in existing if c["name"] == DEMO_CAMPAIGN["name"]), None)
        if campaign is None:  # the registry's statuses are known at once (read-your-writes): no retry
            response = await campaigns.post("/v1/campaigns", json=DEMO_CAMPAIGN)
            if response.status_code != 201:
                raise SystemExit(f"the campaign was refused: {response.text}")
            campaign = response.json()
        await campaigns.post(f"/v1/campaigns/{campaign['id']}/activate")
    say(f"campaign '{DEMO_CAMPAIGN['name']}' active: delivery -> shipped, payment is paid -> SMS")
    return str(campaign["id"])


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


async def play(processes: subprocess.Popen[bytes]) -> None:
    settings = ServiceSettings()
    await wait_until_ready(processes)
    token = issue_token(settings, DEMO_PARTNER)
    watcher = asyncio.create_task(show_status_changes(settings))
    await asyncio.sleep(1)  # the watcher joins before the first change
    await define_statuses(token)
    await define_campaign(token)
    await publish_orders(settings)
    say(f"demo token (read, write): {token}")
    say("SMS appear below as the notifier's console provider sends them (also in .state/notifier/sms.jsonl,")
    say(f"and at GET http://127.0.0.1:{SERVICES['notifier']}/v1/messages with the token)")
    await asyncio.sleep(8)
    watcher.cancel()


def foreground() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    processes = start_processes()
    try:
        asyncio.run(play(processes))
        say("running; Ctrl-C stops the services (make infra-down stops Kafka and PostgreSQL)")
        processes.wait()
    except KeyboardInterrupt:
        say("stopping")
    finally:
        stop_group(processes.pid)


def running_pid() -> int | None:
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        pid = int(PID_FILE.read_text())
        os.killpg(pid, 0)
        return pid
    return None


def up() -> None:
    if (pid := running_pid()) is not None:
        say(f"already running (process group {pid}); make logs follows it, make down stops it")
        return
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    with LOG_FILE.open("ab") as log:
        processes = start_processes(log)
    PID_FILE.write_text(str(processes.pid))
    asyncio.run(play(processes))
    say(f"running in the background (logs: {LOG_FILE}); make logs follows them, make down stops everything")


def down() -> None:
    pid = running_pid()
    if pid is None:
        say("not running")
    else:
        stop_group(pid)
        say("stopped")
    PID_FILE.unlink(missing_ok=True)


def logs() -> None:
    if not LOG_FILE.exists():
        raise SystemExit("no logs yet: make up first")
    with contextlib.suppress(KeyboardInterrupt):
        subprocess.run(["tail", "-n", "100", "-F", str(LOG_FILE)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.run")
    parser.add_argument("command", nargs="?", default="foreground", choices=("foreground", "up", "down", "logs"))
    {"foreground": foreground, "up": up, "down": down, "logs": logs}[parser.parse_args().command]()


if __name__ == "__main__":
    main()
