"""The CloudEvents 1.0 envelope (structured JSON mode) every record value on every topic is wrapped in.

A record value is ``{"specversion": "1.0", "id", "source", "type", "time", "subject", "datacontenttype",
"partnerid", "correlationid", "causationid", "data": {...}}``; the Kafka header ``content-type`` should be
`CLOUDEVENTS_CONTENT_TYPE`. `partnerid`, `correlationid` and `causationid` are CloudEvents extension
attributes (lowercase alphanumerics, as the spec requires).

* `id` is unique per event and is what consumers de-duplicate on, so it is required when reading (a default
  would give every redelivery a new id); `time` is required too; `Envelope.wrap` fills both. Our producers use
  UUIDs (uuid4, or a uuid5 for commands whose id must be deterministic, see `contracts.sms.send_sms_id`);
  upstream producers may use any unique non-empty string of up to 128 characters, as CloudEvents allows.
* `type` names the data contract and its major version (``order.status-changed.v1``); `Envelope[X]` only
  accepts ``X.EVENT_TYPE``.
* `causationid` is the id of the event that caused this one, `correlationid` the id of the conversation it
  belongs to (the first event's id). `Envelope.wrap_caused_by` fills both from the parent envelope.

Reading is tolerant: unknown attributes (other CloudEvents extensions) are ignored, and so are unknown fields
in `data` (see `contracts.base`). What is present is validated strictly by the decoders here, which raise
`ContractError` with a reason code suitable for a dead-letter header.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Generic, Literal, Self, TypeVar, cast
from uuid import uuid4

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.config import JsonDict

from contracts.base import Contract
from contracts.errors import ContractError, ErrorReason
from contracts.primitives import Identifier, PartnerId, UtcDatetime
from contracts.text import dotted, unstorable_json
from contracts.topics import Topic

CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
"""The Kafka ``content-type`` header value of a structured-mode CloudEvent."""

DataT = TypeVar("DataT", bound=Contract)

_MAX_DETAIL = 2000


def _contract_of(cls: type[Any]) -> type[Contract] | None:
    args = getattr(cls, "__pydantic_generic_metadata__", {}).get("args", ())
    if len(args) == 1 and isinstance(args[0], type) and issubclass(args[0], Contract):
        return args[0]
    return None


def _describe_contract(schema: JsonDict, cls: type[Any]) -> None:
    """Pin `type` to the contract's event type in the JSON Schema of `Envelope[X]`."""
    contract = _contract_of(cls)
    properties = schema.get("properties")
    if contract is not None and isinstance(properties, dict):
        type_schema = properties.get("type")
        if isinstance(type_schema, dict):
            type_schema["const"] = contract.EVENT_TYPE


def _new_id() -> str:
    return str(uuid4())


def _now() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel, Generic[DataT]):
    """A CloudEvents 1.0 event whose `data` is the contract `DataT`."""

    model_config = ConfigDict(extra="ignore", frozen=True, json_schema_extra=_describe_contract)

    specversion: Literal["1.0"] = "1.0"
    id: Identifier
    source: str = Field(min_length=1, max_length=256, examples=["/services/orders"])
    type: str = Field(min_length=1, max_length=128)
    time: UtcDatetime
    subject: str | None = Field(default=None, max_length=256)
    datacontenttype: Literal["application/json"] = "application/json"
    partnerid: PartnerId
    correlationid: Identifier | None = None
    causationid: Identifier | None = None
    data: DataT

    @model_validator(mode="after")
    def _check_consistency(self) -> Self:
        expected = type(self.data).EVENT_TYPE
        if self.type != expected:
            raise ValueError(f"type {self.type!r} does not match the data contract {expected!r}")
        owner = self.data.owner_partner_id()
        if owner is not None and owner != self.partnerid:
            raise ValueError(f"partnerid {self.partnerid!r} differs from the payload's partner {owner!r}")
        return self

    @classmethod
    def wrap(
        cls,
        data: DataT,
        *,
        source: str,
        partner_id: str,
        subject: str | None = None,
        event_id: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        time: datetime | None = None,
    ) -> Envelope[DataT]:
        """Wrap `data`: `type` comes from ``data.EVENT_TYPE``, `subject` defaults to the contract's own."""
        return envelope_type(type(data))(
            id=event_id or _new_id(),
            source=source,
            type=data.EVENT_TYPE,
            time=time or _now(),
            subject=subject if subject is not None else data.event_subject(),
            partnerid=partner_id,
            correlationid=correlation_id,
            causationid=causation_id,
            data=data,
        )

    @classmethod
    def wrap_caused_by(
        cls,
        parent: Envelope[Any],
        data: DataT,
        *,
        source: str,
        subject: str | None = None,
        event_id: str | None = None,
        time: datetime | None = None,
    ) -> Envelope[DataT]:
        """Wrap `data` as a consequence of `parent`: same partner, causation = parent id, same correlation."""
        return cls.wrap(
            data,
            source=source,
            partner_id=parent.partnerid,
            subject=subject,
            event_id=event_id,
            correlation_id=parent.correlationid or parent.id,
            causation_id=parent.id,
            time=time,
        )

    @property
    def topic(self) -> Topic:
        """The topic this event is published to."""
        return self.data.TOPIC

    def key(self) -> bytes:
        """The Kafka record key (see `contracts.topics`)."""
        return self.data.record_key(self.partnerid)

    def to_bytes(self) -> bytes:
        """The record value: compact UTF-8 JSON."""
        return self.__pydantic_serializer__.to_json(self)  # bytes at once (model_dump_json decodes them to str)

    @classmethod
    def from_bytes(cls, raw: bytes | str) -> Self:
        """Parse a record value of this parametrised envelope (``Envelope[OrderUpserted].from_bytes(raw)``)."""
        contract = _contract_of(cls)
        if contract is None:
            raise TypeError("parametrise the envelope first: Envelope[SomeContract].from_bytes(raw)")
        return cast(Self, decode_any(raw, (contract,)))


@functools.cache
def _parametrised(model: type[Contract]) -> type[Envelope[Any]]:
    return cast("type[Envelope[Any]]", Envelope.__class_getitem__(model))


def envelope_type(model: type[DataT]) -> type[Envelope[DataT]]:
    """``Envelope[model]`` for a model known only at run time."""
    return cast("type[Envelope[DataT]]", _parametrised(model))  # a string: subscripting costs per call


def decode(raw: bytes | str, model: type[DataT]) -> Envelope[DataT]:
    """Parse a record value that must carry `model`; raises `ContractError`."""
    return cast("Envelope[DataT]", decode_any(raw, (model,)))


def decode_any(raw: bytes | str, models: Iterable[type[Contract]]) -> Envelope[Contract]:
    """Parse a record value whose `type` selects one of `models`; raises `ContractError`.

    Narrow the result with ``isinstance(envelope.data, SomeContract)``.
    """
    by_type = {model.EVENT_TYPE: model for model in models}
    _refuse_unstorable_text(raw)
    valid = _decode_valid(raw, by_type)
    if valid is not None:
        return valid
    # Not valid: parse again, carefully, to say precisely what is wrong.
    event_type, event_id = _read_head(raw)
    model = by_type.get(event_type)
    if model is None:
        raise ContractError(
            ErrorReason.UNKNOWN_EVENT_TYPE,
            f"type {event_type!r} is not one of {sorted(by_type)}",
            event_type=event_type,
            event_id=event_id,
        )
    try:
        return envelope_type(model).model_validate_json(raw, strict=True)
    except ValidationError as exc:
        raise ContractError(_classify(exc), _describe(exc), event_type=event_type, event_id=event_id) from exc


def _refuse_unstorable_text(raw: bytes | str) -> None:
    found = unstorable_json(raw)
    if not found:
        return
    path, problem = found[0]
    reason = ErrorReason.INVALID_PAYLOAD if path[:1] == ("data",) else ErrorReason.INVALID_ENVELOPE
    raise ContractError(reason, f"{dotted(path)}: {problem}"[:_MAX_DETAIL])


_TYPE_ATTRIBUTE = re.compile(r'"type"\s*:\s*"([^"\\]{1,200})"')


def _decode_valid(raw: bytes | str, by_type: dict[str, type[Contract]]) -> Envelope[Contract] | None:
    """The fast path for valid records: one parse. The contract is the only one expected, or the one the first
    `"type"` attribute names (a guess: a wrong one only sends the record down the careful path)."""
    if len(by_type) == 1:
        (model,) = by_type.values()
    else:
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        named = _TYPE_ATTRIBUTE.search(text)
        if named is None or named[1] not in by_type:
            return None
        model = by_type[named[1]]
    try:
        return _parametrised(model).model_validate_json(raw, strict=True)
    except ValidationError:
        return None


def _read_head(raw: bytes | str) -> tuple[str, str | None]:
    """The `type` and `id` attributes, read before the contract is known."""
    try:
        document = pydantic_core.from_json(raw)
    except ValueError as exc:
        raise ContractError(ErrorReason.MALFORMED_JSON, str(exc)[:_MAX_DETAIL]) from exc
    if not isinstance(document, dict):
        raise ContractError(ErrorReason.MALFORMED_JSON, f"expected a JSON object, got {type(document).__name__}")
    event_id = document.get("id")
    event_id = event_id if isinstance(event_id, str) else None
    event_type = document.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise ContractError(ErrorReason.INVALID_ENVELOPE, "type: missing or not a string", event_id=event_id)
    return event_type, event_id


def _classify(exc: ValidationError) -> ErrorReason:
    for error in exc.errors():
        loc = error["loc"]
        if not loc or loc[0] != "data":
            return ErrorReason.INVALID_ENVELOPE
    return ErrorReason.INVALID_PAYLOAD


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "<envelope>"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)[:_MAX_DETAIL]
