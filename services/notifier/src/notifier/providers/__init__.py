"""SMS providers behind one small interface (`base.Provider`), chosen by `NOTIFIER_PROVIDER`."""

from __future__ import annotations

from notifier.providers.base import (
    Accepted,
    DeliveryReport,
    InboundSms,
    OutcomeUnknown,
    OutgoingSms,
    Provider,
    ProviderFailure,
)

__all__ = [
    "Accepted",
    "DeliveryReport",
    "InboundSms",
    "OutcomeUnknown",
    "OutgoingSms",
    "Provider",
    "ProviderFailure",
]
