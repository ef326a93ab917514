"""kill -9 of the campaigns service with journey timers due: after the restart, each due SMS goes exactly once.

The service is a real process; its clock is the real one moved forward by the seconds in a file (CLOCK_FILE),
so the test makes an hour pass at once."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaProducer

from devtools.platform import Infrastructure, database_dsn, running
from devtools.pytest_plugin import wait_until
from devtools.scenario import example_status_list
from devtools.upstream import Upstream

from .test_seed_scenario import until

ORDERS = 60
JOURNEY = {
    "name": "Reminder in an hour",
    "trigger": {"status_type": "payment", "from": "any", "to": "awaiting_payment"},
    "quiet_hours": "deliver_immediately",  # the real clock's time of day must not hold the SMS
    "steps": [
        {"kind": "wait_duration", "minutes": 60},
        {"kind": "send_sms", "template": "Reminder: order {{ order.id }} awaits payment"},
    ],
}


async def test_timers_due_when_campaigns_is_killed_fire_once_after_the_restart(
    infrastructure: Infrastructure, tmp_path: Path, producer: AIOKafkaProducer
) -> None:
    clock_file = tmp_path / "clock-offset"
    async with running(infrastructure, tmp_path, extra_env={"CLOCK_FILE": str(clock_file)}) as platform:
        async with platform.client("status-registry", "demo") as registry:
            assert (await registry.put("/v1/statuses", json={"statuses": example_status_list()})).status_code == 200
        async with platform.client("campaigns", "demo") as campaigns:
            created = await campaigns.post("/v1/campaigns", json=JOURNEY)
            assert created.status_code == 201, created.text
            assert (await campaigns.post(f"/v1/campaigns/{created.json()['id']}/activate")).status_code == 200
        upstream = Upstream(producer, platform, "demo")
        for n in range(ORDERS):
            order_id = f"o-{n}"
            await upstream.order(order_id, f"Клиент {n}", "invoice_issued", phone=f"+7916{3000000 + n:07d}")
            await upstream.report(order_id, "awaiting_payment", 2)

        conn = await asyncpg.connect(database_dsn(infrastructure.postgres_dsn, platform.database("campaigns")))
        try:

            async def all_waiting() -> bool:
                waiting = await conn.fetchval("SELECT count(*) FROM journey_runs WHERE state = 'waiting' AND step = 0")
                return bool(waiting == ORDERS)

            await wait_until(all_waiting, timeout_s=60, what=f"{ORDERS} orders waiting an hour")
            assert platform.sent_sms() == []

            clock_file.write_text("3660")  # an hour and a minute later: every timer is due
            await asyncio.sleep(0.3)  # the service may be firing them right now
            platform.kill("campaigns")
            platform.start("campaigns")
            await platform.wait_ready("campaigns")

            await until(lambda: len(platform.sent_sms()) >= ORDERS, f"{ORDERS} SMS", timeout_s=60)
            await asyncio.sleep(2)  # a duplicate would show up now
            done = await conn.fetchval("SELECT count(*) FROM journey_runs WHERE state = 'done'")
        finally:
            await conn.close()
        sent = platform.sent_sms()
        per_command = Counter(sms["id"] for sms in sent)
        assert [cid for cid, n in per_command.items() if n > 1] == [], "an SMS went out twice"
        orders = Counter(sms["text"].split("order ")[1].split(" ")[0] for sms in sent)
        assert orders == Counter({f"o-{n}": 1 for n in range(ORDERS)})
        assert done == ORDERS
