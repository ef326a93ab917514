"""Two instances of every service in the same consumer groups, one of each killed with -9 and a third started
while hundreds of orders flow (a rebalance under load): every expected SMS exactly once, every order's status
changes all there, numbered without a gap, and each delivered to a partner's webhook endpoint (a real HTTP receiver
checking the signatures with the `standardwebhooks` verifier) in sequence, a repeat only under its first
webhook-id."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Callable

import httpx
from aiokafka import AIOKafkaProducer
from joserfc import jwt
from joserfc.jwk import KeySet

from contracts.envelope import Envelope
from contracts.orders import OrderStatusChanged
from contracts.topics import Topic, prefixed
from devtools.platform import SERVICES, Platform
from devtools.pytest_plugin import read_topic
from devtools.scenario import define_example
from devtools.upstream import Upstream
from devtools.webhook_receiver import Receiver, register, status_changes_in_order

from .test_crash_safety import publish
from .test_seed_scenario import until

ORDERS = 300  # half before the kills, half while the new instances join


def changes_expected(numbers: range) -> dict[str, int]:
    """Status changes per order: three from the order's first statuses, "paid" for two orders in three, "shipped"."""
    return {f"o-{n}": 3 + (1 if n % 3 else 0) + 1 for n in numbers}


async def status_changes(platform: Platform) -> dict[str, list[Envelope[OrderStatusChanged]]]:
    """The status changes on the topic per order, duplicates (a relay's batch published again) dropped."""
    topic = prefixed(Topic.ORDER_STATUS_CHANGED, platform.prefix)
    records = await read_topic(platform.infrastructure.kafka_bootstrap, topic, timeout_s=30)
    seen: set[str] = set()
    per_order: dict[str, list[Envelope[OrderStatusChanged]]] = defaultdict(list)
    for record in records:
        event = Envelope[OrderStatusChanged].from_bytes(record.value or b"")
        if event.id not in seen:
            seen.add(event.id)
            per_order[event.data.order_id].append(event)
    return per_order


def delivered_changes(receiver: Receiver) -> int:
    return sum(map(len, status_changes_in_order(receiver.deliveries()).values()))


async def tokens_verify_across(platform: Platform, instances: list[str]) -> int:
    """A token from each identity instance verifies with the JWKS every other one serves (one key schedule in the
    database), and names the same issuer: an integrator may reach any instance. Returns the tokens checked."""
    partner = {"Authorization": f"Bearer {await platform.tokens.token('demo')}"}
    async with httpx.AsyncClient(headers=partner, timeout=10) as http:
        created = await http.post(
            f"{platform.url(instances[0])}/v1/clients", json={"name": "erp", "scopes": ["orders:read"]}
        )
        assert created.status_code == 201, created.text
        client = (created.json()["client_id"], created.json()["client_secret"])
        tokens = []
        for instance in instances:
            answer = await http.post(
                f"{platform.url(instance)}/oauth/token", data={"grant_type": "client_credentials"}, auth=client
            )
            assert answer.status_code == 200, answer.text
            tokens.append(answer.json()["access_token"])
        for instance in instances:
            keys = KeySet.import_key_set((await http.get(f"{platform.url(instance)}/.well-known/jwks.json")).json())
            for token in tokens:
                claims = jwt.decode(token, keys, algorithms=["Ed25519"]).claims
                assert (claims["iss"], claims["sub"]) == (platform.url("identity"), "demo")
    return len(tokens) * len(instances)


async def test_two_instances_of_each_service_survive_a_kill_and_a_new_instance_under_load(
    platform: Platform, producer: AIOKafkaProducer, summary: Callable[[str], None]
) -> None:
    started = time.monotonic()
    for service in SERVICES:
        platform.start(service, f"{service}.2")
    await platform.wait_ready(*(f"{service}.2" for service in SERVICES))
    await define_example(platform, "demo")
    receiver = Receiver()
    await register(platform, "demo", receiver)
    upstream = Upstream(producer, platform, "demo")

    expected = await publish(upstream, range(ORDERS // 2))
    sent_at_kill = len(platform.sent_sms())
    for service in SERVICES:  # one instance of each dies mid-stream, and another one starts
        platform.kill(service)
        platform.start(service, f"{service}.3")
    expected |= await publish(upstream, range(ORDERS // 2, ORDERS))
    await platform.wait_ready(*(f"{service}.3" for service in SERVICES))
    verified = await tokens_verify_across(platform, ["identity.2", "identity.3"])

    await until(lambda: len(platform.sent_sms()) >= len(expected), f"{len(expected)} SMS", timeout_s=120)
    wanted = changes_expected(range(ORDERS))
    # A delivery the killed webhooks instance held is made again once its lease (30 s) has run out.
    await until(lambda: delivered_changes(receiver) >= sum(wanted.values()), "every webhook", timeout_s=120)
    await asyncio.sleep(3)  # late duplicates would show up now
    receiver.close()
    sent = platform.sent_sms()
    per_command = Counter(sms["id"] for sms in sent)
    assert [cid for cid, n in per_command.items() if n > 1] == [], "an SMS went out twice"
    orders = sorted(sms["text"].split("order ")[1].split(" ")[0] for sms in sent)
    assert orders == sorted(expected), set(expected) ^ set(orders)

    changes = await status_changes(platform)
    for order_id, count in wanted.items():
        sequences = sorted(e.data.sequence for e in changes[order_id])
        assert sequences == list(range(1, count + 1)), f"{order_id}: {sequences}"
    assert set(changes) == set(wanted)
    webhooks = status_changes_in_order(receiver.deliveries())  # raises on an event under two webhook-ids
    assert webhooks == {order_id: list(range(1, count + 1)) for order_id, count in wanted.items()}
    repeats = len(receiver.requests()) - sum(wanted.values())
    summary(
        f"several instances: {ORDERS} orders, {len(expected)} SMS once each, "
        f"{sum(wanted.values())} status changes gap-free, with 2 instances per service, one killed -9 and one "
        f"started mid-stream ({sent_at_kill} of the first half's {ORDERS // 3} SMS out at the kill), "
        f"{verified} identity tokens verified across its instances, "
        f"every change delivered to the webhook endpoint in sequence ({repeats} repeats, each under its webhook-id), "
        f"in {time.monotonic() - started:.0f} s"
    )
