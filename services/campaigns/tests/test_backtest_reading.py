"""The backtest reads orders' lines without validating them into an `OrderStatusChanged` (contracts.past_changes):
over many generated changes and campaigns, every decision and the whole result are the ones the validated events
give, and a line reads back into the very event it was written from."""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest

from campaigns.backtest_replay import Replay, Tally
from campaigns.backtest_worker import _feed, _finish, _start
from campaigns.domain import CampaignDefinition, PartnerSettings, Policy
from contracts.orders import OrderStatusChanged
from contracts.past_changes import (
    PastChange,
    past_change_line,
    past_change_tsv_line,
    read_past_change,
    read_past_change_tsv,
)

POLICY = Policy(default_region="RU", default_zone="Europe/Moscow", sms_ttl=timedelta(hours=24), send_sms_topic="t")
UNTIL = datetime(2026, 12, 1, tzinfo=UTC)
SINCE = UNTIL - timedelta(days=30)
CODES = {"general": ("accepted", "completed"), "delivery": ("at_pickup_point", "shipped", "delivered"),
         "payment": ("invoice_issued", "paid", "refunded")}  # fmt: skip
PHONES = ("+79161234567", "+7 916 123-45-67", "89161234568", "+74951234567", "+12015550123", "+447400123456",
          "12345", None, "+79160000001", "+79160000002")  # fmt: skip
# With what TSV escapes (a backslash, tab, newline, carriage return, backspace, form feed, vertical tab; its null).
NAMES = ("Анна", "Bob", None, "Ёжик 😀", "x" * 200, "\\N", "a\tb\\n\nc\r\x08\x0c\x0b\\")
TEMPLATES = (
    "{{ customer.name }}, заказ {{ order.id }} доставлен. Спасибо!",
    "Order {{ order.id }}: {{ from_status.name }} -> {{ to_status.name }} ({{ order.amount }} {{order.currency}})",
    "{{ customer.name | default: 'friend' | upcase }}, {{ status_type }}",
    "{% if customer.name %}{{ customer.name }}{% endif %} " + "long text " * 20,
)


def status(code: str) -> dict[str, str]:
    return {"code": code, "name": code.replace("_", " ").title()}


def change_of(rng: random.Random, order_id: str, customer: str) -> OrderStatusChanged:
    status_type = rng.choice(("delivery", "delivery", "payment", "general"))
    statuses = {t: status(rng.choice(codes)) for t, codes in CODES.items() if rng.random() < 0.8 or t == status_type}
    before = rng.choice((None, *CODES[status_type]))
    return OrderStatusChanged.model_validate(
        {
            "order_id": order_id,
            "status_type": status_type,
            "from_status": status(before) if before else None,
            "to_status": statuses[status_type],
            "to_include_in_analytics": rng.random() < 0.5,
            "sequence": rng.randrange(1, 9),
            "occurred_at": SINCE,
            "order": {
                "order_id": order_id,
                "statuses": statuses,
                "amount": str(Decimal(rng.randrange(0, 500000)) / 100),
                "currency": rng.choice(("RUB", "USD")),
                "customer": {
                    "id": customer,
                    "phone": rng.choice(PHONES),
                    "name": rng.choice(NAMES),
                    "sms_consent": rng.random() < 0.7,
                },
                "placed_at": SINCE - timedelta(days=1),
            },
        }
    )


def campaign_of(rng: random.Random) -> CampaignDefinition:
    filters: list[dict[str, Any]] = []
    for _ in range(rng.randrange(0, 4)):
        kind = rng.choice(("order_status", "has_phone", "sms_consent", "amount"))
        if kind == "order_status":
            status_type = rng.choice(list(CODES))
            op = rng.choice(("eq", "in", "not_in"))
            codes = rng.sample(CODES[status_type], k=rng.randrange(1, len(CODES[status_type]) + 1))
            filters.append(
                {"kind": kind, "status_type": status_type, "op": op, "value": codes[0] if op == "eq" else codes}
            )
        elif kind == "amount":
            filters.append(
                {"kind": kind, "min": rng.choice((None, 100)), "max": 3000, "currency": rng.choice((None, "RUB"))}
            )
        else:
            filters.append({"kind": kind})
    return CampaignDefinition.model_validate(
        {
            "name": "generated",
            "trigger": {
                "status_type": "delivery",
                "from": rng.choice(("any", "none", ["shipped"])),
                "to": ["shipped", "delivered"],
            },
            "filters": filters,
            "template": rng.choice(TEMPLATES),
            "reentry": rng.choice(("once_per_order", "every_time")),
            "transactional": rng.random() < 0.3,
            "quiet_hours": rng.choice(("partner_default", "deliver_immediately", {"start": "22:00", "end": "08:00"})),
        }
    )


def test_every_decision_is_the_validated_events() -> None:
    rng = random.Random(32)
    for _ in range(12):
        definition = campaign_of(rng)
        cap = rng.choice((None, {"max_messages": 2, "window_hours": 24}))
        partner = PartnerSettings.model_validate(
            {"frequency_cap": cap, "quiet_hours": rng.choice((None, {"start": time(9), "end": time(21)}))}
        )
        fast, validated = (Replay(definition, partner, POLICY, SINCE, UNTIL) for _ in range(2))
        at = SINCE
        for n in range(1500):
            at += timedelta(minutes=rng.randrange(0, 90), microseconds=rng.randrange(1_000_000))
            event = change_of(rng, f"o-{rng.randrange(n // 2 + 1)}", f"c-{rng.randrange(40)}")
            read = read_past_change(past_change_line(f"e-{n}", at, event))
            assert read.event() == event
            tsv = read_past_change_tsv(past_change_tsv_line(f"e-{n}", at, event))
            assert tsv.event() == event and tsv._replace(change=None) == read._replace(change=None)  # as TSV
            # The validated event where the line's tuples go: what the backtest decided with before.
            reference = PastChange(f"e-{n}", at, event)  # type: ignore[arg-type]
            assert fast.decide(read) == validated.decide(reference), (definition, event)
        assert fast.result(1.0) == validated.result(1.0)
        assert fast.read == 1500


# Customers whose ids TSV escapes (a worker tells whose a line is from its escaped first item: customer_key_tsv).
CUSTOMERS = [f"c-{k}" for k in range(24)] + ['c"1', 'c"2\\', "Ёжик", 'Ёжик "4"', '\\"5', "c\n6", "c\t7", "\\N"]


def test_workers_sharing_the_customers_add_up_to_one_replay_of_the_whole_stream() -> None:
    """The backtest's workers each decide a share of the customers from the same lines (campaigns.backtest_worker),
    each telling its own from a line's first bytes; their tallies added up give the result one replay of the whole
    stream gives: counts, the first example of each reason, the first samples, the order of equal counts."""
    rng = random.Random(7)
    for workers in (2, 3):
        for _ in range(6):
            definition = campaign_of(rng)
            partner = PartnerSettings.model_validate({"frequency_cap": {"max_messages": 2, "window_hours": 24}})
            lines, at = [], SINCE
            for n in range(1200):
                at += timedelta(minutes=rng.randrange(0, 60))
                order = rng.randrange(n // 2 + 1)  # an order is one customer's (its details as now, in every line)
                event = change_of(rng, f"o-{order}", CUSTOMERS[order % len(CUSTOMERS)])
                lines.append(past_change_tsv_line(f"e-{n}", at, event))
            whole = Replay(definition, partner, POLICY, SINCE, UNTIL)
            for line in lines:
                whole.decide(read_past_change_tsv(line))
            chunks = [b"\n".join(lines[n : n + 300]) + b"\n" for n in range(0, len(lines), 300)]  # as fed
            tally = Tally()
            for index in range(workers):
                _start("k", Replay(definition, partner, POLICY, SINCE, UNTIL), index, workers)
                for chunk in chunks:
                    _feed("k", chunk)
                tally.add(_finish("k"))
            split, one = whole.result(1.0, tally).model_dump(), whole.result(1.0).model_dump()
            assert split == one, [(k, split[k], one[k]) for k in one if split[k] != one[k]]


def test_a_line_of_another_shape_is_refused_with_the_reason() -> None:
    event = change_of(random.Random(1), "o-1", "c-1")
    good = past_change_tsv_line("e-1", SINCE, event).split(b"\t")
    for broken, why in [
        (good[:-1], "an item missing"),
        ([*good, b"x"], "an item too many"),
        ([*good[:9], b"yes", *good[10:]], "a boolean neither t nor f"),
        ([*good[:10], b"\\N", *good[11:]], "a null sequence"),
        ([*good[:2], b"yesterday", *good[3:]], "a time that is not one"),
        ([*good[:4], b"parcel", *good[5:]], "an unknown status type"),
        ([*good[:18], b"much", *good[19:]], "an amount that is not a number"),
        ([b"\xff\xfe", *good[1:]], "bytes that are not UTF-8"),
    ]:
        with pytest.raises(ValueError, match="not a past change line"):
            read_past_change_tsv(b"\t".join(broken))
            pytest.fail(why)
    assert read_past_change_tsv(b"\t".join(good)).event() == event
