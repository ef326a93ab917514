"""Message contracts of the order-status platform: envelope, events, commands, topics and record keys.

The one place a message shape is defined; services import it and never redefine it. See README.md.
"""

from contracts.base import Contract, ContractModel
from contracts.campaign_events import CampaignStatusUsage
from contracts.envelope import CLOUDEVENTS_CONTENT_TYPE, Envelope, decode, decode_any, envelope_type
from contracts.errors import ContractError, ErrorReason
from contracts.inbound import INBOUND_CONTRACTS, InboundEnvelope, OrderStatusReported, OrderUpserted, parse_inbound
from contracts.orders import Customer, OrderSnapshot, OrderStatusChanged
from contracts.registry import (
    ALL_CONTRACTS,
    EVENT_TYPES,
    SCHEMA_VERSIONS,
    TOPIC_CONTRACTS,
    ContractSpec,
    parse_event,
)
from contracts.sms import (
    SEND_SMS_NAMESPACE,
    SendSms,
    SmsDelivered,
    SmsDispatched,
    SmsEncoding,
    SmsFailed,
    SmsFailureReason,
    send_sms_id,
)
from contracts.status_events import StatusDefinitionArchived, StatusDefinitionUpserted
from contracts.statuses import CurrentStatuses, StatusCodes, StatusDefinition, StatusRef, StatusType
from contracts.topics import (
    TOPIC_SPECS,
    Topic,
    TopicSpec,
    campaign_key,
    order_key,
    prefixed,
    sms_key,
    status_definition_key,
)

__all__ = [
    "ALL_CONTRACTS",
    "CLOUDEVENTS_CONTENT_TYPE",
    "EVENT_TYPES",
    "INBOUND_CONTRACTS",
    "SCHEMA_VERSIONS",
    "SEND_SMS_NAMESPACE",
    "TOPIC_CONTRACTS",
    "TOPIC_SPECS",
    "CampaignStatusUsage",
    "Contract",
    "ContractError",
    "ContractModel",
    "ContractSpec",
    "CurrentStatuses",
    "Customer",
    "Envelope",
    "ErrorReason",
    "InboundEnvelope",
    "OrderSnapshot",
    "OrderStatusChanged",
    "OrderStatusReported",
    "OrderUpserted",
    "SendSms",
    "SmsDelivered",
    "SmsDispatched",
    "SmsEncoding",
    "SmsFailed",
    "SmsFailureReason",
    "StatusCodes",
    "StatusDefinition",
    "StatusDefinitionArchived",
    "StatusDefinitionUpserted",
    "StatusRef",
    "StatusType",
    "Topic",
    "TopicSpec",
    "campaign_key",
    "decode",
    "decode_any",
    "envelope_type",
    "order_key",
    "parse_event",
    "parse_inbound",
    "prefixed",
    "send_sms_id",
    "sms_key",
    "status_definition_key",
]
