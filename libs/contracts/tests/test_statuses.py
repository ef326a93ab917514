from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from contracts import (
    Contract,
    OrderStatusChanged,
    StatusCodes,
    StatusDefinition,
    StatusDefinitionArchived,
    StatusDefinitionUpserted,
    StatusRef,
    StatusType,
)


def _definition(samples: dict[type, Contract], **changes: Any) -> StatusDefinition:
    event = samples[StatusDefinitionUpserted]
    assert isinstance(event, StatusDefinitionUpserted)
    return StatusDefinition.model_validate({**event.definition.model_dump(), **changes})


def test_status_types() -> None:
    assert [t.value for t in StatusType] == ["general", "delivery", "payment"]


@pytest.mark.parametrize("code", ["shipped", "at_pickup-point", "a", "x" * 64, "42"])
def test_valid_codes(samples: dict[type, Contract], code: str) -> None:
    assert _definition(samples, code=code).code == code


@pytest.mark.parametrize("code", ["", "Shipped", "at pickup", "x" * 65, "отправлен", "a:b"])
def test_invalid_codes(samples: dict[type, Contract], code: str) -> None:
    with pytest.raises(ValidationError, match="code"):
        _definition(samples, code=code)


@pytest.mark.parametrize("name", ["Отправлен", "已发货", "x" * 100, "В пункте выдачи"])
def test_names_in_any_script(samples: dict[type, Contract], name: str) -> None:
    assert _definition(samples, name=name).name == name


@pytest.mark.parametrize("name", ["", "x" * 101, " padded", "two\nlines"])
def test_invalid_names(samples: dict[type, Contract], name: str) -> None:
    with pytest.raises(ValidationError, match="name"):
        _definition(samples, name=name)


def test_version_starts_at_one(samples: dict[type, Contract]) -> None:
    with pytest.raises(ValidationError, match="version"):
        _definition(samples, version=0)


def test_localized_names_are_keyed_by_language_tag(samples: dict[type, Contract]) -> None:
    with pytest.raises(ValidationError, match="localized_names"):
        _definition(samples, localized_names={"not a tag": "x"})


def test_allowed_transitions(samples: dict[type, Contract]) -> None:
    assert _definition(samples, allowed_next=None).allows_transition_to("anything")
    assert not _definition(samples, allowed_next=[]).allows_transition_to("delivered")
    restricted = _definition(samples, allowed_next=["delivered"])
    assert restricted.allows_transition_to("delivered")
    assert not restricted.allows_transition_to("paid")
    assert restricted.ref() == StatusRef(code="shipped", name="Отправлен")


def test_archived_event_carries_an_archived_definition(samples: dict[type, Contract]) -> None:
    live = _definition(samples)
    with pytest.raises(ValidationError, match="archived=true"):
        StatusDefinitionArchived(definition=live, version=live.version)
    archived = _definition(samples, archived=True, version=5)
    with pytest.raises(ValidationError, match=r"differs from definition\.version"):
        StatusDefinitionArchived(definition=archived, version=4)


def test_status_codes_iterate_in_type_order() -> None:
    codes = StatusCodes(payment="paid", general="accepted")
    assert list(codes.items()) == [(StatusType.GENERAL, "accepted"), (StatusType.PAYMENT, "paid")]
    assert codes.of(StatusType.DELIVERY) is None


def test_status_changed_snapshot_must_show_the_new_status(samples: dict[type, Contract]) -> None:
    event = samples[OrderStatusChanged]
    assert isinstance(event, OrderStatusChanged)
    with pytest.raises(ValidationError, match=r"order.statuses.delivery must be the to_status"):
        OrderStatusChanged.model_validate(
            {**event.model_dump(), "to_status": {"code": "delivered", "name": "Delivered"}}
        )
    with pytest.raises(ValidationError, match="differs from order_id"):
        OrderStatusChanged.model_validate({**event.model_dump(), "order_id": "other"})
    with pytest.raises(ValidationError, match="sequence"):
        OrderStatusChanged.model_validate({**event.model_dump(), "sequence": 0})


def test_first_status_of_a_type_has_no_from_status(samples: dict[type, Contract]) -> None:
    event = samples[OrderStatusChanged]
    first = OrderStatusChanged.model_validate({**event.model_dump(), "from_status": None})
    assert first.from_status is None
