"""A past status change as the orders service streams it to the campaigns backtest (`GET /v1/status-changes`).

One line a change, its items in the order of `FIELDS`: the change as orders published it, with the order's
statuses as they were at that moment, and when it was applied. Two forms of the same items:
* NDJSON (the default): one JSON array a line. An array, not an object: the line is half the bytes, and reading it
  (`read_past_change`) is a JSON parse and a few tuples, about 4 µs, where validating an `OrderStatusChanged` took
  14-40 µs.
* TSV (`Accept: text/tab-separated-values`): PostgreSQL's COPY text format (`TSV_LINE`). What the campaigns
  backtest asks for (`read_past_change_tsv`): PostgreSQL writes it with a third less CPU than the JSON (no function
  per line, no type lookups per item), and it is a fifth fewer bytes; reading it costs what reading the JSON does.
Both ends are the platform's own (PostgreSQL writes the lines, orders' SQL `orders.past_changes`).
`PastChange.event()` is the validated event, for whoever wants the contract itself.

What the campaigns decision reads of a change (campaigns.domain's `ChangeView`) the tuples here offer under the
same names as `OrderStatusChanged`, so the backtest decides with the live path's own functions.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple

import pydantic_core

from contracts.orders import OrderStatusChanged
from contracts.statuses import StatusType

# The line's items, in order. *_code/*_name: null when the order had no such status (from_*: of the changed type
# before the change; general_*/delivery_*/payment_*: the order's statuses right after it).
FIELDS = (
    # First, so that a reader can tell whose change a line is without parsing it (`customer_key`): the backtest's
    # workers each decide a share of the customers and skip the others' lines unread.
    "customer_id",  # the customer's id, phone, name and consent as now
    "event_id",  # the id of the event that made the change
    "recorded_at",  # when orders applied it: when campaigns would have evaluated it
    "order_id",
    "status_type",
    "from_code",
    "from_name",
    "to_code",
    "to_name",
    "to_include_in_analytics",
    "sequence",
    "occurred_at",
    "general_code",
    "general_name",
    "delivery_code",
    "delivery_name",
    "payment_code",
    "payment_name",
    "amount",  # a decimal in a string, as now (the order's history keeps which details changed, not their values)
    "currency",
    "customer_phone",
    "customer_name",
    "sms_consent",
    "placed_at",
)
_NULLABLE = {"from_code", "from_name", "general_code", "general_name", "delivery_code", "delivery_name"}
_NULLABLE |= {"payment_code", "payment_name", "customer_phone", "customer_name"}
_TYPES = {"to_include_in_analytics": "boolean", "sequence": "integer", "sms_consent": "boolean"}

LINE_SCHEMA: dict[str, Any] = {
    "type": "array",
    "description": "One past change a line, its items in this order: " + ", ".join(FIELDS),
    "prefixItems": [
        {
            "title": name,
            "type": [_TYPES.get(name, "string"), "null"] if name in _NULLABLE else _TYPES.get(name, "string"),
        }
        for name in FIELDS
    ],
    "minItems": len(FIELDS),
    "maxItems": len(FIELDS),
}
NDJSON = "application/x-ndjson"
TSV = "text/tab-separated-values"
TSV_LINE = (
    "One past change a line, its items (contracts.past_changes.FIELDS, as in the JSON array) separated by tabs: "
    "`\\N` for null, a backslash escaping a backslash, tab, newline, carriage return, backspace, form feed or "
    "vertical tab; booleans t/f; times as 2026-11-08 06:41:22.356298+00"
)


class Status(NamedTuple):
    code: str
    name: str


class Statuses(NamedTuple):
    general: Status | None
    delivery: Status | None
    payment: Status | None

    def of(self, status_type: StatusType) -> Status | None:
        return self[_INDEX[status_type]]


_INDEX = {StatusType.GENERAL: 0, StatusType.DELIVERY: 1, StatusType.PAYMENT: 2}
_STATUS_TYPES = {str(t): t for t in StatusType}


class Customer(NamedTuple):
    id: str
    phone: str | None
    name: str | None
    sms_consent: bool


class Order(NamedTuple):
    order_id: str
    statuses: Statuses
    amount: Decimal
    currency: str
    customer: Customer
    placed_at: str


class Change(NamedTuple):
    order_id: str
    status_type: StatusType
    from_status: Status | None
    to_status: Status
    to_include_in_analytics: bool
    sequence: int
    occurred_at: str
    order: Order


class PastChange(NamedTuple):
    event_id: str
    recorded_at: datetime
    change: Change

    def event(self) -> OrderStatusChanged:
        """The change as the contract, validated."""
        change, order = self.change, self.change.order
        statuses = {t: s._asdict() for t, s in order.statuses._asdict().items() if s is not None}
        return OrderStatusChanged.model_validate(
            {
                **change._asdict(),
                "occurred_at": datetime.fromisoformat(change.occurred_at),  # either form's text (see the module)
                "from_status": change.from_status._asdict() if change.from_status else None,
                "to_status": change.to_status._asdict(),
                "order": {
                    **order._asdict(),
                    "statuses": statuses,
                    "customer": order.customer._asdict(),
                    "placed_at": datetime.fromisoformat(order.placed_at),
                },
            }
        )


# A named tuple's own constructor is a Python function around this: a backtest builds eight of them a line.
_new = tuple.__new__


def _status(code: str | None, name: str | None) -> Status | None:
    return None if code is None or name is None else _new(Status, (code, name))


def customer_key(line: bytes) -> bytes:
    """Whose change `line` is, without parsing it: the start of its first item, the customer's id as a JSON string,
    up to the first quote (its end, or an escaped quote within it). The same bytes for every line of one customer in
    one stream (the writer escapes an id the same way every time); different customers may share a key."""
    if not line.startswith(b'["'):
        raise ValueError(f"not a past change line: {line[:200]!r}")
    return line[2 : line.find(b'"', 2)]


def read_past_change(line: bytes | str) -> PastChange:
    """One line of the stream; a line of another shape raises ValueError."""
    items = pydantic_core.from_json(line)
    if not isinstance(items, list) or len(items) != len(FIELDS):
        raise ValueError(f"not a past change line: {str(line)[:200]}")
    return past_change_from(items)


def customer_key_tsv(line: bytes) -> bytes:
    """`customer_key` of a TSV line: its first item as COPY wrote it (escaped the same way every time)."""
    end = line.find(b"\t")
    if end < 0:
        raise ValueError(f"not a past change line: {line[:200]!r}")
    return line[:end]


_BOOLEANS = {"t": True, "f": False}
_ESCAPED = re.compile(r"\\(.)")
_UNESCAPED = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _unescaped(item: str) -> str | None:
    if item == "\\N":
        return None
    return _ESCAPED.sub(lambda found: _UNESCAPED.get(found[1], found[1]), item) if "\\" in item else item


def read_past_change_tsv(line: bytes) -> PastChange:
    """One TSV line of the stream (without its newline); a line of another shape raises ValueError."""
    try:
        text = line.decode()
    except UnicodeDecodeError as exc:
        raise ValueError(f"not a past change line: {exc}") from exc
    items: list[Any] = text.split("\t")
    if len(items) != len(FIELDS):
        raise ValueError(f"not a past change line: {text[:200]}")
    if "\\" in text:  # a null or an escaped character somewhere (most lines have neither)
        items = [_unescaped(item) for item in items]
    try:
        items[9], items[10], items[22] = _BOOLEANS[items[9]], int(items[10]), _BOOLEANS[items[22]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a past change line: {exc!r}") from exc
    return past_change_from(items)


def past_change_from(items: list[Any]) -> PastChange:
    try:
        (customer_id, event_id, recorded_at, order_id, status_type, from_code, from_name, to_code, to_name, analytics,
         sequence, occurred_at, general_code, general_name, delivery_code, delivery_name, payment_code, payment_name,
         amount, currency, phone, name, consent, placed_at) = items  # fmt: skip
        statuses = _new(
            Statuses,
            (_status(general_code, general_name), _status(delivery_code, delivery_name),
             _status(payment_code, payment_name)),
        )  # fmt: skip
        customer = _new(Customer, (customer_id, phone, name, consent))
        order = _new(Order, (order_id, statuses, Decimal(amount), currency, customer, placed_at))
        to_status = _new(Status, (to_code, to_name))
        change = _new(
            Change,
            (order_id, _STATUS_TYPES[status_type], _status(from_code, from_name), to_status, analytics, sequence,
             occurred_at, order),
        )  # fmt: skip
        return _new(PastChange, (event_id, datetime.fromisoformat(recorded_at), change))
    except (TypeError, KeyError, ValueError, ArithmeticError) as exc:
        raise ValueError(f"not a past change line: {exc!r}") from exc


def past_change_items(event_id: str, recorded_at: datetime, event: OrderStatusChanged) -> list[Any]:
    """The line's items for this change, as orders' SQL selects them (for tests and tools)."""
    order, customer, before = event.order, event.order.customer, event.from_status
    statuses = [order.statuses.of(t) for t in (StatusType.GENERAL, StatusType.DELIVERY, StatusType.PAYMENT)]
    items: list[Any] = [customer.id, event_id, recorded_at, event.order_id, str(event.status_type)]
    items += [before.code if before else None, before.name if before else None, event.to_status.code]
    items += [event.to_status.name, event.to_include_in_analytics, event.sequence, event.occurred_at]
    for status in statuses:
        items += [status.code if status else None, status.name if status else None]
    items += [format(order.amount, "f"), order.currency, customer.phone, customer.name]
    return [*items, customer.sms_consent, order.placed_at]


def past_change_line(event_id: str, recorded_at: datetime, event: OrderStatusChanged) -> bytes:
    """The NDJSON line for this change, as orders' SQL writes it (for tests and tools)."""
    items = past_change_items(event_id, recorded_at, event)
    return pydantic_core.to_json([item.isoformat() if isinstance(item, datetime) else item for item in items])


_ESCAPES = str.maketrans({"\\": "\\\\", **{char: "\\" + code for code, char in _UNESCAPED.items()}})


def past_change_tsv_line(event_id: str, recorded_at: datetime, event: OrderStatusChanged) -> bytes:
    """The TSV line for this change, as PostgreSQL's COPY writes it (for tests and tools)."""
    return "\t".join(map(_tsv_item, past_change_items(event_id, recorded_at, event))).encode()


def _tsv_item(item: Any) -> str:
    if item is None:
        return "\\N"
    if isinstance(item, bool):
        return "t" if item else "f"
    if isinstance(item, datetime):  # as with TimeZone UTC and DateStyle ISO
        return item.astimezone(UTC).isoformat(sep=" ").removesuffix(":00")
    return str(item).translate(_ESCAPES)
