"""Ops CLI: topics, consumer lag, dead letters (list and replay) and a live tail of decoded events.

`make ops ARGS="topics"`, `make ops ARGS="lag"`, `make ops ARGS="dlq list orders.inbound.v1.dlq"`,
`make ops ARGS="dlq replay orders.inbound.v1.dlq --id <event id>"`, `make ops ARGS="tail orders.status-changed.v1
--partner demo"`. Topic names are given without the environment prefix (`KAFKA_TOPIC_PREFIX` is added).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeAlias

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from contracts.topics import TOPIC_SPECS, prefixed
from devtools.kafka_io import read_topic
from servicekit.kafka import topic_partitions
from servicekit.settings import ServiceSettings

Record: TypeAlias = ConsumerRecord[bytes, bytes]


@asynccontextmanager
async def admin_client(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="ops")
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


@asynccontextmanager
async def plain_consumer(bootstrap: str) -> AsyncIterator[AIOKafkaConsumer]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, client_id="ops")
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def offsets(bootstrap: str, topic: str) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    partitions = [TopicPartition(topic, p) for p in await topic_partitions(bootstrap, topic)]
    async with plain_consumer(bootstrap) as consumer:
        return await consumer.beginning_offsets(partitions), await consumer.end_offsets(partitions)


async def cmd_topics(settings: ServiceSettings, show_all: bool) -> None:
    async with admin_client(settings.kafka_bootstrap_servers) as admin:
        names = sorted(await admin.list_topics())
    ours = {prefixed(spec.topic, settings.kafka_topic_prefix) for spec in TOPIC_SPECS}
    print(f"{'topic':<48} {'partitions':>10} {'end offsets':>12} {'messages':>10}")
    for name in names:
        if name.startswith("__") or (not show_all and name not in ours):
            continue
        begin, end = await offsets(settings.kafka_bootstrap_servers, name)
        messages = sum(end.values()) - sum(begin.values())
        print(f"{name:<48} {len(end):>10} {sum(end.values()):>12} {messages:>10}")


async def group_lag(bootstrap: str, group: str) -> list[tuple[TopicPartition, int, int]]:
    """(partition, committed offset, lag) for every partition the group has committed on."""
    async with admin_client(bootstrap) as admin:
        committed = await admin.list_consumer_group_offsets(group)
    if not committed:
        return []
    async with plain_consumer(bootstrap) as consumer:
        ends = await consumer.end_offsets(list(committed))
    return [(tp, meta.offset, max(0, ends[tp] - meta.offset)) for tp, meta in sorted(committed.items())]


async def cmd_lag(settings: ServiceSettings, only: str | None) -> None:
    async with admin_client(settings.kafka_bootstrap_servers) as admin:
        groups = sorted(g[0] for g in await admin.list_consumer_groups())
    print(f"{'group':<28} {'topic':<44} {'part':>4} {'committed':>10} {'lag':>8}")
    for group in groups:
        if only and group != only:
            continue
        for tp, committed, lag in await group_lag(settings.kafka_bootstrap_servers, group):
            print(f"{group:<28} {tp.topic:<44} {tp.partition:>4} {committed:>10} {lag:>8}")


def headers(record: Record) -> dict[str, str]:
    return {k: v.decode(errors="replace") for k, v in (record.headers or ())}


def envelope_head(record: Record) -> dict[str, Any]:
    """id, type, partner and subject of a record's envelope, as far as it parses."""
    try:
        document = json.loads(record.value or b"")
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


async def cmd_dlq_list(settings: ServiceSettings, topic: str) -> None:
    for record in await read_topic(settings.kafka_bootstrap_servers, settings.topic(topic)):  # type: ignore[arg-type]
        h, head = headers(record), envelope_head(record)
        when = datetime.fromtimestamp(record.timestamp / 1000, UTC).isoformat(timespec="seconds")
        origin = f"{h.get('dlq-original-topic')}[{h.get('dlq-original-partition')}]@{h.get('dlq-original-offset')}"
        print(
            f"{when} {record.partition}@{record.offset} id={head.get('id', '?')} type={head.get('type', '?')} "
            f"partner={head.get('partnerid', '?')} from={origin}\n    {h.get('dlq-reason')}: {h.get('dlq-error')}"
        )


async def cmd_dlq_replay(settings: ServiceSettings, topic: str, ids: Sequence[str]) -> None:
    """Re-publish dead letters to their original topic. Consumers de-duplicate by event id, so replaying
    the same record twice applies it once; records whose id is not in `ids` (when given) stay put."""
    records = await read_topic(settings.kafka_bootstrap_servers, settings.topic(topic))  # type: ignore[arg-type]
    chosen = [r for r in records if not ids or envelope_head(r).get("id") in ids]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_idempotence=True)
    await producer.start()
    try:
        for record in chosen:
            h = headers(record)
            kept = [(k, v) for k, v in (record.headers or ()) if not k.startswith(("dlq-", "retry-"))]
            replay_of = f"{record.topic}/{record.partition}/{record.offset}".encode()
            await producer.send_and_wait(
                h["dlq-original-topic"], record.value, key=record.key, headers=[*kept, ("replay-of", replay_of)]
            )
            event_id = envelope_head(record).get("id")
            print(f"replayed {record.partition}@{record.offset} id={event_id} -> {h['dlq-original-topic']}")
    finally:
        await producer.stop()
    print(f"{len(chosen)} record(s) replayed")


async def cmd_tail(
    settings: ServiceSettings, topic: str, partner: str | None, order: str | None, from_start: bool
) -> None:
    name = settings.topic(topic)  # type: ignore[arg-type]
    consumer = AIOKafkaConsumer(
        name,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_start else "latest",
        client_id="ops-tail",
    )
    await consumer.start()
    try:
        async for record in consumer:
            head = envelope_head(record)
            data = head.get("data") if isinstance(head.get("data"), dict) else {}
            if partner and head.get("partnerid") != partner:
                continue
            if order and (data or {}).get("order_id") != order:
                continue
            print(
                json.dumps({"partition": record.partition, "offset": record.offset, **head}, ensure_ascii=False),
                flush=True,
            )
    finally:
        await consumer.stop()


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="ops", description="Operate the platform's topics")
    commands = root.add_subparsers(dest="command", required=True)
    topics = commands.add_parser("topics", help="every topic with partitions, end offsets and message counts")
    topics.add_argument("--all", action="store_true", help="also topics that are not the platform's")
    lag = commands.add_parser("lag", help="consumer-group lag per partition")
    lag.add_argument("--group")
    dlq = commands.add_parser("dlq", help="dead letters").add_subparsers(dest="dlq_command", required=True)
    dlq.add_parser("list", help="dead letters with their reasons").add_argument("topic")
    replay = dlq.add_parser("replay", help="re-publish dead letters to their original topic")
    replay.add_argument("topic")
    replay.add_argument("--id", action="append", default=[], help="only this event id (repeatable)")
    tail = commands.add_parser("tail", help="decoded events as they arrive")
    tail.add_argument("topic")
    tail.add_argument("--partner")
    tail.add_argument("--order")
    tail.add_argument("--from-beginning", action="store_true")
    return root


async def run(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    settings = ServiceSettings()
    if args.command == "topics":
        await cmd_topics(settings, args.all)
    elif args.command == "lag":
        await cmd_lag(settings, args.group)
    elif args.command == "dlq" and args.dlq_command == "list":
        await cmd_dlq_list(settings, args.topic)
    elif args.command == "dlq":
        await cmd_dlq_replay(settings, args.topic, args.id)
    else:
        await cmd_tail(settings, args.topic, args.partner, args.order, args.from_beginning)


def main() -> None:
    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
