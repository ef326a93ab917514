"""Evaluation through the real broker: status changes in, SendSms out through the outbox, exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI

from campaigns.app import create_app
from campaigns.services import Evaluator, IndexKeeper, policy_of
from campaigns.settings import CampaignsSettings
from contracts.envelope import Envelope
from contracts.sms import SmsDelivered, SmsDispatched, SmsEncoding, SmsFailed, send_sms_id
from contracts.topics import Topic
from devtools.pytest_plugin import read_topic
from servicekit.app import parts_of
from servicekit.outbox import pending_count

Activate = Callable[..., Awaitable[str]]
MakeChange = Callable[..., Envelope[Any]]


async def settled(topics: Any, app: FastAPI) -> None:
    """Every published change consumed and committed, and the outbox relayed."""
    await topics.consumed_all()

    async def relayed() -> bool:
        return await pending_count(app.state.runtime.pool) == 0

    from devtools.pytest_plugin import wait_until

    await wait_until(relayed, what="the outbox to drain")


async def stats(client: httpx.AsyncClient, campaign_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/campaigns/{campaign_id}/stats")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_the_seed_scenario_shipped_and_paid_sends_one_sms(
    demo: httpx.AsyncClient, active_campaign: Activate, make_change: MakeChange, topics: Any, campaigns_app: FastAPI
) -> None:
    campaign_id = await active_campaign()
    change = make_change(to="shipped", payment="paid")
    await topics.publish(change)

    (sms,) = await topics.wait_for_send_sms(1)
    expected_id = send_sms_id(campaign_id, change.id)
    assert sms.id == expected_id and sms.data.idempotency_key == expected_id
    assert sms.causationid == change.id and sms.partnerid == "demo" and sms.type == "sms.send-requested.v1"
    assert sms.data.phone == "+79161234567" and sms.data.campaign_id == campaign_id
    assert sms.data.text == "Анна, заказ o-1 Отгружен" and sms.data.sender == "DemoShop"
    assert sms.data.customer_id == "c-1" and sms.data.order_id == "o-1" and not sms.data.transactional
    assert sms.data.requested_at == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # the injected clock
    assert sms.data.expires_at == sms.data.requested_at + timedelta(hours=24) and sms.data.not_before is None
    records = await topics.send_sms()
    assert len(records) == 1

    from devtools.pytest_plugin import read_topic

    (record,) = await read_topic(topics.settings.kafka_bootstrap_servers, topics.settings.topic_send_sms)
    assert record.key == b"demo:+79161234567"

    await settled(topics, campaigns_app)
    assert await stats(demo, campaign_id) | {"filtered_out_by_reason": {}} == {
        "triggered": 1,
        "fired": 1,
        "filtered_out": 0,
        "filtered_out_by_reason": {},
        "capped": 0,
        "outside_reentry": 0,
        "failed": 0,
        "failed_by_reason": {},
        "sms_requested": 1,
        "sms_sent": 0,
        "sms_delivered": 0,
        "sms_failed": 0,
        "sms_failed_by_reason": {},
    }
    # a window (the console's "last day"): evaluated at the injected clock's 2026-03-02 09:00
    in_window = await demo.get(f"/v1/campaigns/{campaign_id}/stats", params={"since": "2026-03-02T08:00:00Z"})
    after_it = await demo.get(f"/v1/campaigns/{campaign_id}/stats", params={"since": "2026-03-02T10:00:00Z"})
    assert (in_window.json()["triggered"], after_it.json()["triggered"]) == (1, 0)


async def test_trigger_forms_and_filter_reasons_through_the_broker(
    demo: httpx.AsyncClient, active_campaign: Activate, make_change: MakeChange, topics: Any, campaigns_app: FastAPI
) -> None:
    first_status = await active_campaign(
        name="First delivery status", trigger={"status_type": "delivery", "from": "none", "to": "at_pickup_point"}
    )
    from_set = await active_campaign(
        name="Delivered from a set",
        trigger={"status_type": "delivery", "from": ["shipped", "at_delivery_point"], "to": ["delivered"]},
        filters=[{"kind": "sms_consent"}, {"kind": "has_phone"}, {"kind": "amount", "max": "1000"}],
        reentry="every_time",
    )
    paid = await active_campaign(
        name="Paid", trigger={"status_type": "payment", "from": "any", "to": "paid"}, filters=[], reentry="every_time"
    )
    await topics.publish(
        make_change(to="at_pickup_point", before=None, order_id="o-1"),  # fires: the first delivery status
        make_change(to="at_pickup_point", before="shipped", order_id="o-2"),  # "none" does not match
        make_change(to="delivered", before="at_pickup_point", order_id="o-3"),  # not in the from set
        make_change(to="delivered", before="shipped", order_id="o-4", consent=False, phone=None),  # 3 reasons
        make_change(to="paid", before="awaiting_payment", payment="paid", order_id="o-5"),  # fires
        make_change(to="paid", before=None, payment="paid", order_id="o-6", phone="+7 495 123 45 67"),  # landline
    )
    await settled(topics, campaigns_app)
    sent = await topics.send_sms()
    assert sorted((s.data.campaign_id, s.data.order_id) for s in sent) == sorted([(first_status, "o-1"), (paid, "o-5")])
    assert (await stats(demo, first_status))["triggered"] == 1
    delivered = await stats(demo, from_set)
    assert delivered["triggered"] == 1 and delivered["filtered_out"] == 1
    assert delivered["filtered_out_by_reason"] == {"amount_above_max": 1, "no_phone": 1, "no_sms_consent": 1}
    paid_stats = await stats(demo, paid)
    assert (paid_stats["fired"], paid_stats["filtered_out_by_reason"]) == (1, {"not_mobile": 1})
    # the campaigns list's call: several campaigns' stats at once, each as its own stats says, in the order asked
    several = await demo.get("/v1/campaigns/stats", params={"campaign_id": [paid, first_status, from_set, paid]})
    assert several.status_code == 200, several.text
    each = [{"campaign_id": c, **await stats(demo, c)} for c in (paid, first_status, from_set)]
    assert several.json()["items"] == each


async def test_duplicates_and_replays_produce_one_send_sms(
    demo: httpx.AsyncClient,
    active_campaign: Activate,
    make_change: MakeChange,
    topics: Any,
    campaigns_app: FastAPI,
    campaigns_settings: CampaignsSettings,
    clock: Any,
) -> None:
    campaign_id = await active_campaign(reentry="every_time")
    change = make_change()
    await topics.publish(change, change)  # redelivered upstream
    await settled(topics, campaigns_app)

    # A replay of the whole topic by a second instance reading from the beginning (e.g. offsets reset).
    replay = campaigns_settings.model_copy(update={"consumer_group": f"{campaigns_settings.consumer_group}-replay"})
    replayer = create_app(replay, clock)
    async with replayer.router.lifespan_context(replayer):
        await topics.consumed_all(replay.consumer_group)
        await settled(topics, replayer)

    sent = await topics.send_sms()
    assert [s.id for s in sent] == [send_sms_id(campaign_id, change.id)]
    assert (await stats(demo, campaign_id))["triggered"] == 1


async def test_reentry_once_per_order_and_frequency_cap_across_campaigns(
    demo: httpx.AsyncClient, active_campaign: Activate, make_change: MakeChange, topics: Any, campaigns_app: FastAPI
) -> None:
    await demo.put("/v1/settings", json={"frequency_cap": {"max_messages": 2, "window_hours": 24}})
    once = await active_campaign(name="Once per order")
    service = await active_campaign(
        name="Service message",
        trigger={"status_type": "delivery", "from": "any", "to": "delivered"},
        transactional=True,
        reentry="every_time",
    )
    another = await active_campaign(
        name="Another marketing one", trigger={"status_type": "delivery", "from": "any", "to": "delivered"}
    )
    # One at a time: orders live on different partitions, and the cap depends on what came first.
    for change in (
        make_change(order_id="o-1", before="at_pickup_point"),  # once: fired (1 marketing SMS)
        make_change(order_id="o-1", before="at_delivery_point", sequence=4),  # once: outside re-entry
        make_change(order_id="o-2", before="at_pickup_point"),  # once: fired (2 marketing SMS)
        make_change(order_id="o-3", to="delivered", before="shipped"),  # service fires; another is capped
        make_change(order_id="o-4", before="at_pickup_point"),  # once: capped
        make_change(order_id="o-5", before="at_pickup_point", customer_id="c-2"),  # another customer: fired
    ):
        await topics.publish(change)
        await settled(topics, campaigns_app)
    once_stats = await stats(demo, once)
    assert (once_stats["fired"], once_stats["outside_reentry"], once_stats["capped"]) == (3, 1, 1)
    assert (await stats(demo, service))["fired"] == 1
    assert (await stats(demo, another))["capped"] == 1
    sent = await topics.send_sms()
    assert sorted(s.data.order_id for s in sent) == ["o-1", "o-2", "o-3", "o-5"]
    assert [s.data.transactional for s in sent if s.data.order_id == "o-3"] == [True]


def evaluator_of(app: FastAPI, settings: CampaignsSettings, clock: Any, pool: asyncpg.Pool | None = None) -> Evaluator:
    """The consumer's evaluator, called directly: the test decides exactly which events form one batch."""
    runtime = app.state.runtime
    return Evaluator(pool or runtime.pool, parts_of(runtime, IndexKeeper), policy_of(settings), clock)


async def test_one_batch_decides_as_if_its_events_came_one_by_one(
    demo: httpx.AsyncClient,
    active_campaign: Activate,
    make_change: MakeChange,
    topics: Any,
    campaigns_app: FastAPI,
    campaigns_settings: CampaignsSettings,
    clock: Any,
) -> None:
    await demo.put("/v1/settings", json={"frequency_cap": {"max_messages": 1, "window_hours": 24}})
    campaign_id = await active_campaign()  # once per order
    first = make_change(order_id="o-1")
    again = make_change(order_id="o-1", before="at_delivery_point", sequence=4)
    same_customer = make_change(order_id="o-2")
    other_customer = make_change(order_id="o-3", customer_id="c-2")
    batch = [(e, []) for e in (first, first, again, same_customer, other_customer)]  # `first` redelivered

    evaluator = evaluator_of(campaigns_app, campaigns_settings, clock)
    recorded = await evaluator.handle_batch(batch)
    assert [(e.event_id, str(e.outcome)) for e in recorded] == [
        (first.id, "fired"),  # once, though it came twice
        (again.id, "outside_reentry"),  # the batch's own SMS for o-1 counts
        (same_customer.id, "capped"),  # so does its SMS to c-1
        (other_customer.id, "fired"),
    ]
    assert await evaluator.handle_batch(batch) == []  # a replay of the batch: decided already
    await settled(topics, campaigns_app)
    sent = await topics.send_sms()
    assert sorted(s.id for s in sent) == sorted(send_sms_id(campaign_id, e.id) for e in (first, other_customer))

    # The preview reads the same history from the database.
    order = {"amount": "1990.00", "currency": "RUB", "customer": {"id": "c-1", "phone": "+7 916 123-45-67"}}
    order |= {"statuses": {"general": "accepted", "payment": "paid"}}
    path = f"/v1/campaigns/{campaign_id}/preview"
    for order_id, outcome in (("o-1", "outside_reentry"), ("o-9", "capped")):
        body = {"from": "at_pickup_point", "to": "shipped", "order": order | {"order_id": order_id}}
        preview = await demo.post(path, json=body)
        assert preview.status_code == 200 and preview.json()["outcome"] == outcome, preview.text


async def test_a_batch_takes_as_many_statements_whatever_its_size(
    demo: httpx.AsyncClient,
    active_campaign: Activate,
    make_change: MakeChange,
    campaigns_app: FastAPI,
    campaigns_settings: CampaignsSettings,
    clock: Any,
) -> None:
    await demo.put("/v1/settings", json={"frequency_cap": {"max_messages": 5, "window_hours": 24}})
    await active_campaign(reentry="every_time")
    await active_campaign(name="Another one", reentry="every_time")
    statements: list[str] = []

    async def log_statements(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda query: statements.append(query.query))

    pool = await asyncpg.create_pool(campaigns_settings.database_url, min_size=1, max_size=1, init=log_statements)
    evaluator = evaluator_of(campaigns_app, campaigns_settings, clock, pool)

    async def statements_for(size: int) -> int:
        statements.clear()
        batch = [(make_change(order_id=f"o-{size}-{n}", customer_id=f"c-{n}"), []) for n in range(size)]
        assert len(await evaluator.handle_batch(batch)) == 2 * size
        await asyncio.sleep(0)  # asyncpg calls the logger soon after each statement
        return len(statements)

    try:
        await statements_for(1)  # warm-up: asyncpg looks up the types of a new statement once
        assert await statements_for(1) == await statements_for(20)
    finally:
        await pool.close()


async def test_quiet_hours_hold_the_message_with_not_before(
    demo: httpx.AsyncClient, active_campaign: Activate, make_change: MakeChange, topics: Any, clock: Any
) -> None:
    clock.now = datetime(2026, 3, 2, 19, 30, tzinfo=UTC)  # 22:30 in Moscow, 20:30 in Berlin
    await active_campaign()
    await active_campaign(name="Urgent", quiet_hours="deliver_immediately", reentry="every_time")
    await topics.publish(make_change(order_id="o-ru"), make_change(order_id="o-de", phone="+49 1512 3456789"))
    sent = await topics.wait_for_send_sms(4)
    holds = sorted((s.data.order_id, str(s.data.not_before)) for s in sent)
    nine_in_moscow = datetime(2026, 3, 3, 6, 0, tzinfo=UTC)
    assert holds == [("o-de", "None"), ("o-de", "None"), ("o-ru", str(nine_in_moscow)), ("o-ru", "None")]
    held = next(s for s in sent if s.data.not_before is not None)
    assert held.data.expires_at == nine_in_moscow + timedelta(hours=24)


async def test_malformed_and_unknown_records_are_dead_lettered_and_the_consumer_goes_on(
    active_campaign: Activate,
    make_change: MakeChange,
    topics: Any,
    campaigns_app: FastAPI,
    campaigns_settings: CampaignsSettings,
) -> None:
    await active_campaign()
    await topics.publish(raw=b"{not json")
    await topics.publish(raw=b'{"specversion": "1.0", "id": "x", "type": "order.exploded.v1", "data": {}}')
    await topics.publish(make_change())
    await settled(topics, campaigns_app)
    assert len(await topics.send_sms()) == 1
    dlq = campaigns_settings.topic(Topic.ORDER_STATUS_CHANGED_CAMPAIGNS_DLQ)
    dead = await read_topic(campaigns_settings.kafka_bootstrap_servers, dlq)
    assert sorted(dict(r.headers)["dlq-reason"].decode() for r in dead) == ["malformed_json", "unknown_event_type"]


async def test_paused_campaigns_do_not_fire_and_edits_reach_the_index(
    demo: httpx.AsyncClient,
    active_campaign: Activate,
    make_change: MakeChange,
    topics: Any,
    campaigns_app: FastAPI,
    seed_campaign: dict[str, Any],
) -> None:
    campaign_id = await active_campaign(reentry="every_time")
    await demo.post(f"/v1/campaigns/{campaign_id}/pause")
    await topics.publish(make_change(order_id="o-paused"))
    await settled(topics, campaigns_app)
    assert await topics.send_sms() == []
    moved = await demo.put(
        f"/v1/campaigns/{campaign_id}",
        json=seed_campaign | {"trigger": {"status_type": "delivery", "to": "delivered"}, "reentry": "every_time"},
    )
    assert moved.status_code == 200, moved.text
    await demo.post(f"/v1/campaigns/{campaign_id}/activate")
    await topics.publish(make_change(order_id="o-shipped"), make_change(order_id="o-delivered", to="delivered"))
    (sms,) = await topics.wait_for_send_sms(1)
    assert sms.data.order_id == "o-delivered"


async def test_changes_published_before_the_activation_are_ignored(
    demo: httpx.AsyncClient,
    active_campaign: Activate,
    make_change: MakeChange,
    topics: Any,
    campaigns_app: FastAPI,
    clock: Any,
) -> None:
    campaign_id = await active_campaign(reentry="every_time")  # activated at the clock's 09:00
    await topics.publish(
        make_change(order_id="o-old", published_at=clock.now - timedelta(minutes=1)),  # e.g. a replay of old news
        make_change(order_id="o-new", published_at=clock.now + timedelta(minutes=1)),
    )
    await settled(topics, campaigns_app)
    assert [s.data.order_id for s in await topics.send_sms()] == ["o-new"]
    assert (await stats(demo, campaign_id))["triggered"] == 1


async def test_stats_count_the_notifiers_reports_once(
    demo: httpx.AsyncClient, active_campaign: Activate, make_change: MakeChange, topics: Any, campaigns_app: FastAPI
) -> None:
    campaign_id = await active_campaign(reentry="every_time")
    await topics.publish(make_change(order_id="o-1"), make_change(order_id="o-2"))
    sent = await topics.wait_for_send_sms(2)
    now = datetime(2026, 3, 2, 9, 1, tzinfo=UTC)
    first, second = (s.data for s in sent)

    def common(sms: Any) -> dict[str, Any]:
        return {
            "message_id": f"m-{sms.order_id}",
            "send_sms_id": sms.idempotency_key,
            "partner_id": "demo",
            "campaign_id": sms.campaign_id,
            "order_id": sms.order_id,
            "phone": sms.phone,
            "occurred_at": now,
        }

    dispatched = Envelope.wrap(
        SmsDispatched(**common(first), provider="fake", segments=1, encoding=SmsEncoding.UCS2),
        source="/services/notifier",
        partner_id="demo",
    )
    delivered = Envelope.wrap(SmsDelivered(**common(first), provider="fake"), source="/n", partner_id="demo")
    failed = Envelope.wrap(
        SmsFailed(**common(second), reason="opted_out", message="the customer opted out", attempts=0),
        source="/n",
        partner_id="demo",
    )
    for envelope in (dispatched, dispatched, delivered, failed):  # the dispatched report arrives twice
        await topics.publish_sms_event(envelope)
    await topics.producer.send_and_wait(topics.settings.topic_sms_events, b"garbage", key=b"demo:x")

    async def reported() -> bool:
        body = await stats(demo, campaign_id)
        return bool(body["sms_delivered"] == 1 and body["sms_failed"] == 1)

    from devtools.pytest_plugin import wait_until

    await wait_until(reported, what="the notifier's reports in the stats")
    body = await stats(demo, campaign_id)
    assert (body["sms_requested"], body["sms_sent"], body["sms_delivered"], body["sms_failed"]) == (2, 1, 1, 1)
    assert body["sms_failed_by_reason"] == {"opted_out": 1}


async def test_send_sms_carries_the_consent_and_the_stats_show_why_sms_were_not_sent(
    demo: httpx.AsyncClient, active_campaign: Activate, make_change: MakeChange, topics: Any, campaigns_app: FastAPI
) -> None:
    campaign_id = await active_campaign(reentry="every_time")  # no sms_consent filter: the notifier enforces it
    consents = {"o-1": True, "o-2": False, "o-3": False, "o-4": False, "o-5": True, "o-6": True}
    await topics.publish(*(make_change(order_id=o, consent=c) for o, c in consents.items()))
    sent = {s.data.order_id: s.data for s in await topics.wait_for_send_sms(6)}
    assert {o: s.sms_consent for o, s in sent.items()} == consents  # the snapshot's consent, for the notifier

    def report(order_id: str, minute: int, reason: str | None = None) -> Envelope[Any]:
        sms = sent[order_id]
        common = {
            "message_id": f"m-{order_id}", "send_sms_id": sms.idempotency_key, "partner_id": "demo",
            "campaign_id": campaign_id, "order_id": order_id, "phone": sms.phone,
            "occurred_at": datetime(2026, 3, 2, 9, minute, tzinfo=UTC),
        }  # fmt: skip
        data: Any = (
            SmsFailed(**common, reason=reason, message=reason, attempts=0)
            if reason
            else SmsDispatched(**common, provider="fake", segments=1, encoding=SmsEncoding.UCS2)
        )
        return Envelope.wrap(data, source="/services/notifier", partner_id="demo")

    reports = [report(o, 1, "no_consent") for o in ("o-2", "o-3", "o-4")] + [report("o-5", 1, "opted_out")]
    # A provider outage, then ops replayed the dead letter and the SMS went: not a failure any more.
    reports += [report("o-1", 1, "provider_error"), report("o-1", 5)]
    # The same, and then the handset was unreachable: the latest failure counts.
    reports += [report("o-6", 1, "provider_error"), report("o-6", 5), report("o-6", 9, "undeliverable")]
    for envelope in reports:  # one key (one phone): consumed in this order
        await topics.publish_sms_event(envelope)

    async def reported() -> bool:
        return "undeliverable" in (await stats(demo, campaign_id))["sms_failed_by_reason"]

    from devtools.pytest_plugin import wait_until

    await wait_until(reported, what="the notifier's reports in the stats")
    body = await stats(demo, campaign_id)
    assert body["sms_failed_by_reason"] == {"no_consent": 3, "opted_out": 1, "undeliverable": 1}
    assert (body["sms_requested"], body["sms_sent"], body["sms_failed"]) == (6, 2, 5)


async def test_every_instance_keeps_its_index_current_and_both_evaluate_once(
    demo: httpx.AsyncClient,
    active_campaign: Activate,
    make_change: MakeChange,
    topics: Any,
    campaigns_app: FastAPI,
    campaigns_settings: CampaignsSettings,
    clock: Any,
) -> None:
    from devtools.pytest_plugin import wait_until

    # A second instance in another consumer group: it hears about campaign writes through the database
    # and evaluates the same events; the unique (campaign, event) evaluation lets only one of them send.
    other = campaigns_settings.model_copy(update={"consumer_group": f"{campaigns_settings.consumer_group}-other"})
    second = create_app(other, clock)
    async with second.router.lifespan_context(second):
        index = parts_of(second.state.runtime, IndexKeeper).index
        campaign_id = await active_campaign(reentry="every_time")

        async def indexed() -> bool:
            return len(index) == 1

        await wait_until(indexed, what="the other instance to index the new campaign")
        await topics.publish(*(make_change(order_id=f"o-{n}") for n in range(10)))
        await topics.consumed_all()
        await topics.consumed_all(other.consumer_group)
        await settled(topics, campaigns_app)
        sent = await topics.send_sms()
        assert len(sent) == len({s.id for s in sent}) == 10

        await demo.post(f"/v1/campaigns/{campaign_id}/pause")

        async def dropped() -> bool:
            return len(index) == 0

        await wait_until(dropped, what="the other instance to drop the paused campaign")


async def test_a_template_exceeding_a_limit_on_an_orders_data_is_a_failed_evaluation(
    demo: httpx.AsyncClient, active_campaign: Activate, make_change: MakeChange, topics: Any, campaigns_app: FastAPI
) -> None:
    """Saved (cheap with the sample name), it exceeds the loop limit for a long name: that evaluation fails,
    with its reason in the stats, and the consumer goes on to the next change."""
    letter_pairs = (
        "{% assign l = customer.name | split: '' %}{% for a in l %}{% for b in l %}{{ a }}{% endfor %}{% endfor %}"
    )
    campaign_id = await active_campaign(template=letter_pairs, reentry="every_time")
    await topics.publish(make_change(order_id="o-1", name="Анна-Мария " * 3 + "Константинопольская"))
    await topics.publish(make_change(order_id="o-2"))
    await settled(topics, campaigns_app)
    body = await stats(demo, campaign_id)
    assert (body["triggered"], body["failed"], body["fired"]) == (2, 1, 1)
    assert body["failed_by_reason"] == {"template_limit": 1}
    assert [s.data.order_id for s in await topics.send_sms()] == ["o-2"]
