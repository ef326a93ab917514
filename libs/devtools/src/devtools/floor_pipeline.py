"""The floor: the least code that keeps the platform's guarantees over the same three hops (`make bench` baseline).

`python -m devtools.floor_pipeline <hop> <bootstrap> <dsn> <prefix> <sizes-json>`, hop one of orders, campaigns,
notifier: plain aiokafka + asyncpg, no framework, no validation beyond JSON parsing. Each hop consumes a batch,
runs ONE transaction that claims the event ids (the duplicate check), writes its effect rows and its outbox rows,
then, after the commit, publishes the outbox rows with an idempotent producer (acks=all), deletes them and
commits the offsets. Rows left in the outbox by a crash are published at start-up. Its records carry the
platform's headers (ce_type, ce_id, partnerid) and are padded to the platform's mean record size per topic
(`sizes-json`: topic -> bytes, measured by the bench on the platform's own topics), so the broker moves as much.

orders: an upsert gives three status changes (one per type), a status report one; campaigns: a change to
`in_progress` or `shipped` asks for one SMS (the bench's two campaigns fire on exactly those); notifier: each
SendSms gives one SmsDispatched. That is what the platform does with the bench's traffic, minus its decisions.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from contracts.topics import Topic, prefixed
from servicekit.outbox import RELAY_REQUEST_BYTES, BatchSender

SCHEMA = """
CREATE TABLE IF NOT EXISTS claimed (event_id text PRIMARY KEY);
CREATE TABLE IF NOT EXISTS outbox (id bigserial PRIMARY KEY, topic text NOT NULL, key bytea, payload bytea NOT NULL,
                                   headers jsonb NOT NULL);
CREATE TABLE IF NOT EXISTS effects (partner_id text NOT NULL, subject text NOT NULL, kind text NOT NULL,
                                    value text NOT NULL, PRIMARY KEY (partner_id, subject, kind));
"""
CLAIM = "INSERT INTO claimed SELECT unnest($1::text[]) ON CONFLICT DO NOTHING RETURNING event_id"
# One effect row per (partner, subject, kind): the order's status of a type, a campaign's SMS, a sent SMS.
WRITE_EFFECTS = (
    "INSERT INTO effects SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) "
    "ON CONFLICT (partner_id, subject, kind) DO UPDATE SET value = EXCLUDED.value"
)
ADD_OUTBOX = (
    "INSERT INTO outbox (topic, key, payload, headers) SELECT t, k, p, h::jsonb "
    "FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::text[]) WITH ORDINALITY AS r(t, k, p, h, n) "
    "ORDER BY n RETURNING id"
)
STATUS_TYPE = {"paid": "payment", "in_progress": "general", "shipped": "delivery"}
SMS_TEXT = {"in_progress": "{name}, заказ {order} в работе", "shipped": "{name}, заказ {order} отгружен"}

Effect = tuple[str, str, str, str]  # partner, subject, kind, value
Out = tuple[str, bytes, dict[str, Any], str]  # topic, key, envelope, partner


def envelope(kind: str, partner: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"specversion": "1.0", "id": str(uuid.uuid4()), "type": kind, "source": "/floor", "partnerid": partner,
            "datacontenttype": "application/json", "data": data}  # fmt: skip


def orders_hop(prefix: str, event: dict[str, Any]) -> tuple[list[Effect], list[Out]]:
    data, partner = event.get("data", {}), event.get("partnerid", "")
    order = data.get("order_id", "")
    if "statuses" in data:
        changes = [(kind, code) for kind, code in data["statuses"].items() if code]
    else:
        changes = [(STATUS_TYPE.get(data.get("code", ""), "general"), data.get("code", ""))]
    topic = prefixed(Topic.ORDER_STATUS_CHANGED, prefix)
    effects = [(partner, order, kind, code) for kind, code in changes]
    out = [
        (topic, f"{partner}:{order}".encode(), envelope("order.status_changed.v1", partner, {
            "order_id": order, "status_type": kind, "to_status": {"code": code}, "customer": data.get("customer"),
            "occurred_at": data.get("occurred_at")}), partner)
        for kind, code in changes
    ]  # fmt: skip
    return effects, out


def campaigns_hop(prefix: str, event: dict[str, Any]) -> tuple[list[Effect], list[Out]]:
    data, partner = event.get("data", {}), event.get("partnerid", "")
    code = data.get("to_status", {}).get("code", "")
    if code not in SMS_TEXT:
        return [], []
    order, customer = data.get("order_id", ""), data.get("customer") or {}
    key = f"{partner}:{order}:{code}"
    text = SMS_TEXT[code].format(name=customer.get("name", ""), order=order)
    command = {"idempotency_key": key, "order_id": order, "phone": customer.get("phone"), "text": text}
    topic = prefixed(Topic.SEND_SMS, prefix)
    return [(partner, order, f"sms:{code}", key)], [
        (topic, key.encode(), envelope("sms.send.v1", partner, command), partner)
    ]


def notifier_hop(prefix: str, event: dict[str, Any]) -> tuple[list[Effect], list[Out]]:
    data, partner = event.get("data", {}), event.get("partnerid", "")
    key = data.get("idempotency_key", "")
    outcome = {"send_sms_id": key, "order_id": data.get("order_id"), "provider_message_id": str(uuid.uuid4())}
    topic = prefixed(Topic.SMS_EVENTS, prefix)
    return [(partner, key, "sent", "dispatched")], [
        (topic, key.encode(), envelope("sms.dispatched.v1", partner, outcome), partner)
    ]


HOPS: dict[str, tuple[Topic, Callable[[str, dict[str, Any]], tuple[list[Effect], list[Out]]]]] = {
    "orders": (Topic.ORDERS_INBOUND, orders_hop),
    "campaigns": (Topic.ORDER_STATUS_CHANGED, campaigns_hop),
    "notifier": (Topic.SEND_SMS, notifier_hop),
}


def encoded(item: Out, sizes: dict[str, int]) -> tuple[str, bytes, bytes, str]:
    """(topic, key, value, headers-json): the value padded to the platform's mean size on that topic."""
    topic, key, document, partner = item
    value = json.dumps(document, ensure_ascii=False).encode()
    missing = sizes.get(topic, 0) - len(value) - len(', "pad": ""')
    if missing > 0:
        value = json.dumps(document | {"pad": "x" * missing}, ensure_ascii=False).encode()
    headers = {"ce_type": document["type"], "ce_id": document["id"], "partnerid": partner}
    return topic, key, value, json.dumps(headers)


OutboxRow = tuple[int, str, bytes, bytes, str]  # id, topic, key, value, headers-json


async def publish(conn: asyncpg.Connection, sender: BatchSender, rows: list[OutboxRow]) -> None:
    """Publish committed outbox rows (acks=all, idempotent), then delete them: a lost delete only republishes."""
    if not rows:
        return
    await sender.send_all(
        (topic, key, value, [(k, v.encode()) for k, v in json.loads(headers).items()])
        for _, topic, key, value, headers in rows
    )
    await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", [row[0] for row in rows])


async def run(hop: str, bootstrap: str, dsn: str, prefix: str, sizes: dict[str, int]) -> None:
    source, handle = HOPS[hop]
    conn = await asyncpg.connect(dsn)
    await conn.execute(SCHEMA)
    consumer = AIOKafkaConsumer(
        prefixed(source, prefix), bootstrap_servers=bootstrap, group_id=f"{prefix}floor-{hop}",
        enable_auto_commit=False, auto_offset_reset="earliest",
    )  # fmt: skip
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=2,
        max_batch_size=RELAY_REQUEST_BYTES, max_request_size=RELAY_REQUEST_BYTES,
    )  # fmt: skip
    await consumer.start()
    await producer.start()
    sender = BatchSender(producer)
    try:
        leftovers = await conn.fetch("SELECT id, topic, key, payload, headers::text FROM outbox ORDER BY id")
        await publish(conn, sender, [tuple(row) for row in leftovers])
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            records = [record for batch in batches.values() for record in batch]
            if not records:
                continue
            events = [json.loads(record.value or b"{}") for record in records]
            rows = await transaction(conn, prefix, handle, events, sizes)
            await publish(conn, sender, rows)
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()
        await conn.close()


async def transaction(
    conn: asyncpg.Connection,
    prefix: str,
    handle: Callable[[str, dict[str, Any]], tuple[list[Effect], list[Out]]],
    events: list[dict[str, Any]],
    sizes: dict[str, int],
) -> list[tuple[int, str, bytes, bytes, str]]:
    """Claim the batch's event ids, write the new events' effects and outbox rows: one transaction."""
    async with conn.transaction():
        claimed = {row[0] for row in await conn.fetch(CLAIM, [event.get("id", "") for event in events])}
        effects: dict[tuple[str, str, str], str] = {}  # the last write of a key wins, as in order
        out: list[tuple[str, bytes, bytes, str]] = []
        for event in events:
            if event.get("id", "") not in claimed:
                continue
            claimed.discard(event.get("id", ""))  # the same id twice in one batch: once
            new_effects, new_out = handle(prefix, event)
            effects |= {(p, s, k): v for p, s, k, v in new_effects}
            out += [encoded(item, sizes) for item in new_out]
        if effects:
            columns = list(zip(*[(*key, value) for key, value in effects.items()], strict=True))
            await conn.execute(WRITE_EFFECTS, *(list(c) for c in columns))
        if not out:
            return []
        ids = await conn.fetch(ADD_OUTBOX, *(list(c) for c in zip(*out, strict=True)))
    return [(row[0], *item) for row, item in zip(ids, out, strict=True)]


def main() -> None:
    hop, bootstrap, dsn, prefix, sizes = sys.argv[1:]
    asyncio.run(run(hop, bootstrap, dsn, prefix, json.loads(sizes)))


if __name__ == "__main__":
    main()
