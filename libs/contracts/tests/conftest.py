"""Sample instances of every contract, shared by the tests of this library (fixture `samples`).

Tests derive variants with ``Model.model_validate({**sample.model_dump(), "field": value})`` so that the
variant is validated.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from contracts import (
    Contract,
    CurrentStatuses,
    Customer,
    OrderSnapshot,
    OrderStatusChanged,
    OrderStatusReported,
    OrderUpserted,
    SendSms,
    SmsDelivered,
    SmsDispatched,
    SmsEncoding,
    SmsFailed,
    StatusCodes,
    StatusDefinition,
    StatusDefinitionArchived,
    StatusDefinitionUpserted,
    StatusRef,
    StatusType,
    send_sms_id,
)
from contracts.campaign_events import CampaignStatusUsage
from contracts.identity import ApiClientRevoked

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
PARTNER = "acme"


def _status_definition(**changes: object) -> StatusDefinition:
    fields: dict[str, object] = {
        "partner_id": PARTNER,
        "code": "shipped",
        "name": "Отправлен",
        "localized_names": {"en": "Shipped", "pt-BR": "Enviado"},
        "description": "Handed to the carrier",
        "type": StatusType.DELIVERY,
        "include_in_analytics": True,
        "position": 2,
        "is_initial": False,
        "allowed_next": ["at-delivery-point", "delivered"],
        "archived": False,
        "version": 3,
        "created_at": NOW - timedelta(days=30),
        "updated_at": NOW,
    }
    fields.update(changes)
    return StatusDefinition.model_validate(fields)


def _customer() -> Customer:
    return Customer(id="cust-1", phone="+7 900 123-45-67", name="Анна", sms_consent=True)


def _status_changed(**changes: object) -> OrderStatusChanged:
    shipped = StatusRef(code="shipped", name="Отправлен")
    fields: dict[str, object] = {
        "order_id": "order-42",
        "status_type": StatusType.DELIVERY,
        "from_status": StatusRef(code="at-pickup-point", name="В пункте выдачи"),
        "to_status": shipped,
        "to_include_in_analytics": True,
        "sequence": 4,
        "order": OrderSnapshot(
            order_id="order-42",
            statuses=CurrentStatuses(
                general=StatusRef(code="in-progress", name="In progress"),
                delivery=shipped,
                payment=StatusRef(code="paid", name="Paid"),
            ),
            amount=Decimal("1999.90"),
            currency="RUB",
            customer=_customer(),
            placed_at=NOW - timedelta(days=1),
        ),
        "occurred_at": NOW,
    }
    fields.update(changes)
    return OrderStatusChanged.model_validate(fields)


def _send_sms(**changes: object) -> SendSms:
    fields: dict[str, object] = {
        "idempotency_key": send_sms_id("campaign-1", "event-1"),
        "partner_id": PARTNER,
        "campaign_id": "campaign-1",
        "order_id": "order-42",
        "customer_id": "cust-1",
        "phone": "+79001234567",
        "text": "Ваш заказ отправлен",
        "sender": "ACME",
        "requested_at": NOW,
        "expires_at": NOW + timedelta(hours=24),
        "not_before": NOW + timedelta(hours=9),
        "transactional": False,
        "sms_consent": True,
    }
    fields.update(changes)
    return SendSms.model_validate(fields)


def _make_samples() -> dict[type[Contract], Contract]:
    sms_common: dict[str, object] = {
        "message_id": "msg-1",
        "send_sms_id": send_sms_id("campaign-1", "event-1"),
        "partner_id": PARTNER,
        "campaign_id": "campaign-1",
        "order_id": "order-42",
        "phone": "+79001234567",
        "occurred_at": NOW,
    }
    samples: list[Contract] = [
        StatusDefinitionUpserted(definition=_status_definition()),
        StatusDefinitionArchived(definition=_status_definition(archived=True, version=4), version=4),
        OrderUpserted(
            order_id="order-42",
            customer=_customer(),
            amount=Decimal("1999.90"),
            currency="RUB",
            placed_at=NOW - timedelta(days=1),
            statuses=StatusCodes(general="accepted", payment="invoice-issued"),
            source_sequence=7,
            occurred_at=NOW,
        ),
        OrderStatusReported(
            order_id="order-42", code="shipped", occurred_at=NOW, source_sequence=8, comment="by courier"
        ),
        _status_changed(),
        _send_sms(),
        SmsDispatched.model_validate(
            {
                **sms_common,
                "provider": "smpp",
                "provider_message_id": "p-1",
                "segments": 1,
                "encoding": SmsEncoding.UCS2,
            }
        ),
        SmsFailed.model_validate({**sms_common, "reason": "opted_out", "message": "customer opted out", "attempts": 0}),
        SmsDelivered.model_validate({**sms_common, "provider": "smpp", "provider_message_id": "p-1"}),
        CampaignStatusUsage(
            campaign_id="campaign-1",
            partner_id=PARTNER,
            name="Shipped and paid",
            active=True,
            codes=["paid", "shipped"],
            version=3,
        ),
        ApiClientRevoked(partner_id=PARTNER, client_id="cli_0123456789abcdefghijKLMN", revoked_at=NOW),
    ]
    return {type(sample): sample for sample in samples}


@pytest.fixture
def samples() -> dict[type[Contract], Contract]:
    return _make_samples()
