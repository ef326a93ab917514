"""The one exception type a consumer catches when an incoming record does not fit a contract.

`ContractError.reason` is a stable, machine-readable code meant for dead-letter headers and metrics;
`detail` is the human-readable explanation (validation errors with their JSON locations).
"""

from __future__ import annotations

from enum import StrEnum


class ErrorReason(StrEnum):
    MALFORMED_JSON = "malformed_json"
    """The bytes are not a JSON object (not UTF-8, broken JSON, or a JSON array/scalar)."""
    INVALID_ENVELOPE = "invalid_envelope"
    """A CloudEvents attribute is missing or invalid (no `type`, naive `time`, unsupported specversion...)."""
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    """The `type` is not one this reader accepts (another topic's event, or a version it does not know)."""
    INVALID_PAYLOAD = "invalid_payload"
    """The envelope is fine but `data` does not validate against the contract of its `type`."""


class ContractError(ValueError):
    """An incoming record that cannot be read as a contract; dead-letter it with `reason` in the headers."""

    def __init__(
        self,
        reason: ErrorReason,
        detail: str,
        *,
        event_type: str | None = None,
        event_id: str | None = None,
    ) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.event_type = event_type
        self.event_id = event_id
