"""An HTTP SMS gateway: POST JSON with a bearer token and an Idempotency-Key header.

Request: ``POST <url>`` ``{"id", "to", "from", "text", "encoding", "segments"}``; a 2xx answer carries
``{"message_id": "..."}`` (or ``"message_ids": [...]``, one per segment). The gateway must de-duplicate on
``Idempotency-Key`` (the SendSms id), which is what makes a resend after a crash safe: `lookup` says
"unknown" and the dispatcher sends again under the same key.

Delivery reports arrive on ``POST /v1/delivery-reports/http``: one JSON object or a list of them,
``{"message_id", "status", "segment"?, "occurred_at"?}``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx

from notifier.domain import FailureKind, ReceiptStatus
from notifier.providers.base import (
    Accepted,
    DeliveryReport,
    InboundSink,
    OutgoingSms,
    Provider,
    ProviderFailure,
    ReportSink,
)
from servicekit.http import retry_after_seconds

# Both the words gateways use and the SMPP receipt codes (stat:DELIVRD ...), lower-cased.
STATUS_MAP = {
    "accepted": ReceiptStatus.ACCEPTED,
    "acceptd": ReceiptStatus.ACCEPTED,
    "queued": ReceiptStatus.ACCEPTED,
    "enroute": ReceiptStatus.ACCEPTED,
    "sent": ReceiptStatus.ACCEPTED,
    "buffered": ReceiptStatus.ACCEPTED,
    "delivered": ReceiptStatus.DELIVERED,
    "delivrd": ReceiptStatus.DELIVERED,
    "undeliverable": ReceiptStatus.UNDELIVERABLE,
    "undeliv": ReceiptStatus.UNDELIVERABLE,
    "failed": ReceiptStatus.UNDELIVERABLE,
    "rejected": ReceiptStatus.UNDELIVERABLE,
    "rejectd": ReceiptStatus.UNDELIVERABLE,
    "expired": ReceiptStatus.UNDELIVERABLE,
    "deleted": ReceiptStatus.UNDELIVERABLE,
}

# 408 and 429 are about the moment, not the message; 425 too early. Everything else 4xx is the message's.
TRANSIENT_STATUSES = frozenset({408, 425, 429})


def map_receipt_status(raw: str) -> ReceiptStatus:
    try:
        return STATUS_MAP[raw.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown delivery status {raw!r}") from None


def parse_delivery_report(body: bytes) -> list[DeliveryReport]:
    """The HTTP gateway's delivery reports (one JSON object or a list); ValueError says what is wrong."""
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    items: list[Any] = document if isinstance(document, list) else [document]
    reports = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("message_id"), str):
            raise ValueError("each report needs a string message_id")
        segment = item.get("segment")
        if segment is not None and (not isinstance(segment, int) or segment < 0):
            raise ValueError("segment must be a non-negative integer")
        occurred = item.get("occurred_at")
        reports.append(
            DeliveryReport(
                provider_message_id=item["message_id"],
                status=map_receipt_status(str(item.get("status", ""))),
                raw_status=str(item.get("status")),
                segment=segment,
                occurred_at=datetime.fromisoformat(occurred) if isinstance(occurred, str) else None,
            )
        )
    return reports


class HttpProvider(Provider):
    name = "http"
    resend_is_safe = True

    def __init__(self, url: str, token: str, *, timeout_s: float = 10.0) -> None:
        self.url = url
        self._token = token
        self._timeout = httpx.Timeout(timeout_s)
        self._client: httpx.AsyncClient | None = None

    async def start(self, on_reports: ReportSink, on_inbound: InboundSink) -> None:
        self._client = httpx.AsyncClient(timeout=self._timeout)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def send(self, sms: OutgoingSms) -> Accepted:
        assert self._client is not None, "start() the provider first"
        body = {
            "id": sms.idempotency_key,
            "to": sms.phone,
            "from": sms.sender,
            "text": sms.text,
            "encoding": str(sms.encoding),
            "segments": sms.segments,
        }
        headers = {"Authorization": f"Bearer {self._token}", "Idempotency-Key": sms.idempotency_key}
        try:
            response = await self._client.post(self.url, json=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise ProviderFailure(FailureKind.TRANSIENT, f"timeout: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise ProviderFailure(FailureKind.TRANSIENT, f"{type(exc).__name__}: {exc}") from exc
        if response.is_success:
            return self._accepted(response, sms)
        detail = f"HTTP {response.status_code}: {response.text[:300]}"
        if response.status_code >= 500 or response.status_code in TRANSIENT_STATUSES:
            retry_after = retry_after_seconds(response.headers.get("Retry-After"), datetime.now(UTC))
            raise ProviderFailure(FailureKind.TRANSIENT, detail, retry_after_s=retry_after)
        raise ProviderFailure(FailureKind.PERMANENT, detail)

    @staticmethod
    def _accepted(response: httpx.Response, sms: OutgoingSms) -> Accepted:
        try:
            body = response.json()
            if isinstance(body.get("message_ids"), list) and body["message_ids"]:
                return Accepted(tuple(str(i) for i in body["message_ids"]), per_segment=True)
            return Accepted((str(body["message_id"]),))
        except (ValueError, KeyError, TypeError, AttributeError):
            # Taken (2xx) but no readable id: the message went out, so this is no failure to retry;
            # reports for it will carry an id we cannot match and are kept unlinked.
            return Accepted((sms.idempotency_key,))

    def map_status(self, raw: str) -> ReceiptStatus:
        return map_receipt_status(raw)
