"""The ops CLI against the real broker: topics, lag, dead letters listed and replayed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid

import pytest
from aiokafka import TopicPartition

from contracts.topics import Topic
from devtools import ops
from devtools.kafka_io import commit_offsets
from devtools.pytest_plugin import Infrastructure, read_topic
from servicekit.consumer import DeadLetters, Rejected
from servicekit.outbox import idempotent_producer
from servicekit.settings import ServiceSettings


async def test_topics_lag_and_dead_letter_list_and_replay(
    infrastructure: Infrastructure,
    topic_prefix: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", infrastructure.kafka_bootstrap)
    monkeypatch.setenv("KAFKA_TOPIC_PREFIX", topic_prefix)
    settings = ServiceSettings()
    inbound, dlq = settings.topic(Topic.ORDERS_INBOUND), settings.topic(Topic.ORDERS_INBOUND_DLQ)
    producer = idempotent_producer(infrastructure.kafka_bootstrap, "tests")
    await producer.start()
    try:
        for n in range(3):
            await producer.send_and_wait(inbound, b'{"id": "e%d"}' % n, key=b"demo:o-1")
        records = await read_topic(infrastructure.kafka_bootstrap, inbound)
        group = f"g-{uuid.uuid4().hex[:6]}"
        first = TopicPartition(inbound, records[0].partition)
        await commit_offsets(infrastructure.kafka_bootstrap, group, {first: records[0].offset + 1})
        await DeadLetters(producer, dlq, group).publish([Rejected(records[1], "unknown_status", "no 'x' here")])
    finally:
        await producer.stop()

    await ops.run(["topics"])
    listing = capsys.readouterr().out
    assert f"{inbound} " in listing and "3" in listing.split(inbound)[1].splitlines()[0]

    await ops.run(["lag", "--group", group])
    lag_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(group))
    assert lag_line.split()[-2:] == ["1", "2"]  # committed 1 of 3: lag 2

    await ops.run(["dlq", "list", "orders.inbound.v1.dlq"])
    listed = capsys.readouterr().out
    assert "unknown_status: no 'x' here" in listed and f"from={inbound}[" in listed

    await ops.run(["dlq", "replay", "orders.inbound.v1.dlq"])
    assert "1 record(s) replayed" in capsys.readouterr().out
    replayed = (await read_topic(infrastructure.kafka_bootstrap, inbound))[-1]
    assert replayed.value == records[1].value
    assert dict(replayed.headers)["replay-of"].startswith(dlq.encode())


async def test_tail_prints_decoded_events_filtered_by_partner_and_order(
    infrastructure: Infrastructure,
    topic_prefix: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", infrastructure.kafka_bootstrap)
    monkeypatch.setenv("KAFKA_TOPIC_PREFIX", topic_prefix)
    topic = ServiceSettings().topic(Topic.ORDERS_INBOUND)
    producer = idempotent_producer(infrastructure.kafka_bootstrap, "tests")
    await producer.start()
    try:
        for partner, order in (("demo", "o-1"), ("demo", "o-2"), ("acme", "o-1")):
            body = {"id": f"{partner}-{order}", "type": "order.status-reported.v1", "partnerid": partner,
                    "data": {"order_id": order, "code": "shipped"}}  # fmt: skip
            await producer.send_and_wait(topic, json.dumps(body).encode(), key=f"{partner}:{order}".encode())
    finally:
        await producer.stop()
    tail = asyncio.create_task(
        ops.run(["tail", "orders.inbound.v1", "--partner", "demo", "--order", "o-1", "--from-beginning"])
    )
    await asyncio.sleep(4)
    tail.cancel()
    await asyncio.gather(tail, return_exceptions=True)
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [event["id"] for event in printed] == ["demo-o-1"]


@pytest.mark.parametrize(
    ("argv", "wrong"),
    [
        (["dlq", "list", "orders.inbound.v9.dlq"], "no dead-letter topic 'orders.inbound.v9.dlq'"),
        (["dlq", "replay", "orders.inbound.v1"], "'orders.inbound.v1' is not a dead-letter topic"),
        (["tail", "orders.status-changed"], "no topic 'orders.status-changed'"),
    ],
    ids=["dlq-list-unknown", "dlq-replay-not-dead-letters", "tail-unknown"],
)
def test_an_unknown_topic_is_one_line_naming_the_topics_that_exist(
    infrastructure: Infrastructure, topic_prefix: str, argv: list[str], wrong: str
) -> None:
    """`make ops` as typed: a wrong topic name is one line on stderr and a non-zero exit, not a traceback."""
    env = os.environ | {"KAFKA_BOOTSTRAP_SERVERS": infrastructure.kafka_bootstrap, "KAFKA_TOPIC_PREFIX": topic_prefix}
    done = subprocess.run(
        [sys.executable, "-m", "devtools.ops", *argv], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert wrong in line
    existing = line.split("; the platform's ", 1)[1]
    if argv[0] == "dlq":
        assert "orders.inbound.v1.dlq, " in existing and "orders.inbound.v1," not in existing
    else:
        assert "orders.status-changed.v1, " in existing
