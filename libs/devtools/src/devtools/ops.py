"""Ops CLI: topics, consumer lag, dead letters (list and replay) and a live tail of decoded events.

`make ops ARGS="topics"`, `make ops ARGS="lag"`, `make ops ARGS="dlq list orders.inbound.v1.dlq"`,
`make ops ARGS="dlq replay orders.inbound.v1.dlq --id <event id>"`, `make ops ARGS="tail orders.status-changed.v1
--partner demo"`. Topic names are given without the environment prefix (`KAFKA_TOPIC_PREFIX` is added). A topic
that does not exist (or, for `dlq`, is not a dead-letter topic) is refused in one line naming those that exist.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer

from contracts.topics import TOPIC_SPECS, prefixed
from servicekit import ops
from servicekit.settings import ServiceSettings

DEAD_LETTER_SUFFIX = ".dlq"  # every dead-letter topic's name ends so (contracts.topics)


async def existing_topic(settings: ServiceSettings, topic: str, *, dead_letters: bool = False) -> str:
    """The full (prefixed) name of `topic` when the broker has it; otherwise exit with one line that says so and
    names the platform's topics that exist (its dead-letter topics for `dlq`), rather than a traceback."""
    async with ops.inspector(settings.kafka_bootstrap_servers) as kafka:
        present = set(await kafka.list_topics())
    full_name = prefixed(topic, settings.kafka_topic_prefix)

    def of_the_kind(name: str) -> bool:
        return name.endswith(DEAD_LETTER_SUFFIX) or not dead_letters

    if full_name in present and of_the_kind(topic):
        return full_name
    kind = "dead-letter topic" if dead_letters else "topic"
    known = [spec.topic for spec in TOPIC_SPECS if settings.topic(spec.topic) in present and of_the_kind(spec.topic)]
    where = f" (prefix '{settings.kafka_topic_prefix}')" if settings.kafka_topic_prefix else ""
    wrong = f"'{topic}' is not a {kind}" if full_name in present else f"no {kind} '{topic}'{where}"
    there = ", ".join(known) or "none (make infra-up creates them)"
    raise SystemExit(f"ops: {wrong}; the platform's {kind}s: {there}")


async def cmd_topics(settings: ServiceSettings, show_all: bool) -> None:
    ours = {prefixed(spec.topic, settings.kafka_topic_prefix) for spec in TOPIC_SPECS}
    print(f"{'topic':<48} {'partitions':>10} {'end offsets':>12} {'messages':>10}")
    async with ops.inspector(settings.kafka_bootstrap_servers) as kafka:
        names = [name for name in await kafka.list_topics() if show_all or name in ours]
        summaries = await kafka.topic_summaries(names)
    for topic in summaries:
        print(f"{topic.name:<48} {topic.partitions:>10} {topic.end_offset:>12} {topic.messages:>10}")


async def cmd_lag(settings: ServiceSettings, only: str | None) -> None:
    print(f"{'group':<28} {'topic':<44} {'part':>4} {'committed':>10} {'lag':>8}")
    async with ops.inspector(settings.kafka_bootstrap_servers) as kafka:
        lags = await kafka.group_lags([g for g in await kafka.consumer_groups() if not only or g == only])
    for lag in lags:
        print(f"{lag.group:<28} {lag.topic:<44} {lag.partition:>4} {lag.committed:>10} {lag.lag:>8}")


async def cmd_dlq_list(settings: ServiceSettings, topic: str) -> None:
    name = await existing_topic(settings, topic, dead_letters=True)
    for letter in await ops.dead_letters(settings.kafka_bootstrap_servers, name):
        origin = f"{letter.original_topic}[{letter.original_partition}]@{letter.original_offset}"
        print(
            f"{letter.timestamp.isoformat(timespec='seconds')} {letter.partition}@{letter.offset} id={letter.event_id} "
            f"type={letter.type} partner={letter.partner} from={origin}\n    {letter.reason}: {letter.error}"
        )


async def cmd_dlq_replay(settings: ServiceSettings, topic: str, ids: Sequence[str]) -> None:
    """Re-publish dead letters to their original topic (`servicekit.ops.replay_dead_letters`)."""
    name = await existing_topic(settings, topic, dead_letters=True)
    replayed = await ops.replay_dead_letters(settings.kafka_bootstrap_servers, name, ids)
    for record in replayed:
        print(f"replayed {record.partition}@{record.offset} id={record.event_id} -> {record.to_topic}")
    print(f"{len(replayed)} record(s) replayed")


async def cmd_tail(
    settings: ServiceSettings, topic: str, partner: str | None, order: str | None, from_start: bool
) -> None:
    name = await existing_topic(settings, topic)
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
            head = ops.envelope_head(record)
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
