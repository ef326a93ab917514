"""SMPP 3.4 through `smpp34` (a Rust/tokio SMPP client): bind, submit_sm, UDH concatenation, receipts, reconnect.

* One transceiver session, kept by a background task that binds, reads deliver_sm and re-binds with
  jittered exponential backoff whenever the SMSC drops it. A send while unbound is a transient failure.
* A long message goes out as several submit_sm, each with a 6-byte UDH (IEI 0x00: reference, total,
  sequence) and esm_class UDHI; the reference is derived from the message id so a retry of a message
  reuses it. Segments the SMSC already accepted are not submitted again by a retry in this process.
* deliver_sm with esm_class "delivery receipt" becomes a DeliveryReport (`id:... stat:DELIVRD`, or the
  receipted_message_id / message_state TLVs); any other deliver_sm is an inbound reply (STOP...).
* SMPP has no idempotency key and no lookup by our id, so after a crash an attempt whose outcome was
  never recorded cannot be settled: `lookup` says "unknown" and the dispatcher gives up on it rather
  than risk a second SMS (at most once for that one message; see docs/notifier.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import re
from typing import TYPE_CHECKING

import smpp34

from contracts.sms import SmsEncoding
from notifier.domain import FailureKind, ReceiptStatus, encode_segment, gsm7_text, split_segments
from notifier.providers.base import (
    Accepted,
    DeliveryReport,
    InboundSink,
    InboundSms,
    OutgoingSms,
    Provider,
    ProviderFailure,
    ReportSink,
)
from notifier.providers.http import map_receipt_status

if TYPE_CHECKING:
    from notifier.settings import NotifierSettings

log = logging.getLogger(__name__)

ESM_UDHI = 0x40
ESM_DELIVERY_RECEIPT = 0x04
DATA_CODING = {SmsEncoding.GSM7: 0x00, SmsEncoding.UCS2: 0x08}
# The SMSC is busy, not refusing the message: try again later.
THROTTLING = frozenset({int(getattr(smpp34, "ESME_RTHROTTLED", 0x58)), int(getattr(smpp34, "ESME_RMSGQFUL", 0x14))})
TLV_RECEIPTED_MESSAGE_ID = int(getattr(smpp34, "TLV_RECEIPTED_MESSAGE_ID", 0x001E))
TLV_MESSAGE_STATE = int(getattr(smpp34, "TLV_MESSAGE_STATE", 0x0427))
# SMPP 3.4 message_state values.
MESSAGE_STATES = {
    1: ReceiptStatus.ACCEPTED,  # ENROUTE
    2: ReceiptStatus.DELIVERED,
    3: ReceiptStatus.UNDELIVERABLE,  # EXPIRED
    4: ReceiptStatus.UNDELIVERABLE,  # DELETED
    5: ReceiptStatus.UNDELIVERABLE,
    6: ReceiptStatus.ACCEPTED,
    8: ReceiptStatus.UNDELIVERABLE,  # REJECTED
}
RECEIPT = re.compile(r"id:(?P<id>\S+).*?stat:(?P<stat>[A-Za-z]+)", re.DOTALL)


def udh(reference: int, total: int, sequence: int) -> bytes:
    """Concatenation header, 8-bit reference: UDHL 5, IEI 0x00, IEDL 3, ref, total, seq."""
    return bytes((0x05, 0x00, 0x03, reference, total, sequence))


def reference_of(message_id: str) -> int:
    return hashlib.sha256(message_id.encode()).digest()[0]


def addresses(sms: OutgoingSms) -> dict[str, object]:
    sender = sms.sender or ""
    numeric = sender.lstrip("+").isdigit()
    return {
        "source_addr": sender.lstrip("+") if numeric else sender,
        "source_addr_ton": 1 if numeric else 5,  # international number, or alphanumeric sender id
        "source_addr_npi": 1 if numeric else 0,
        "dest_addr_ton": 1,
        "dest_addr_npi": 1,
    }


def submissions(sms: OutgoingSms) -> list[tuple[bytes, int]]:
    """(short_message, esm_class) per segment, UDH included for a concatenated message."""
    parts = split_segments(sms.text, sms.encoding)
    if len(parts) == 1:
        return [(encode_segment(parts[0], sms.encoding), 0)]
    reference = reference_of(sms.message_id)
    return [
        (udh(reference, len(parts), n) + encode_segment(part, sms.encoding), ESM_UDHI)
        for n, part in enumerate(parts, start=1)
    ]


def decode_short_message(data: bytes, data_coding: int, esm_class: int) -> str:
    if esm_class & ESM_UDHI and data:
        data = data[data[0] + 1 :]
    if data_coding == 0x08:
        return data.decode("utf-16-be", errors="replace")
    if data_coding == 0x00:
        return gsm7_text(data)
    return data.decode("latin-1")


class SmppProvider(Provider):
    name = "smpp"

    def __init__(
        self,
        host: str,
        port: int,
        system_id: str,
        password: str,
        *,
        system_type: str = "",
        submit_timeout_s: float = 10.0,
        reconnect_max_s: float = 30.0,
    ) -> None:
        self.host, self.port = host, port
        self._system_id, self._password, self._system_type = system_id, password, system_type
        self._submit_timeout_s = submit_timeout_s
        self._reconnect_max_s = reconnect_max_s
        self._smsc: smpp34.Smsc | None = None
        self._client: smpp34.Client | None = None
        self._bound = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None
        self._accepted_parts: dict[str, dict[int, str]] = {}  # message id -> segment -> SMSC id
        self.binds = 0

    @classmethod
    def from_settings(cls, settings: NotifierSettings) -> SmppProvider:
        return cls(
            settings.smpp_host,
            settings.smpp_port,
            settings.smpp_system_id,
            settings.smpp_password,
            system_type=settings.smpp_system_type,
            submit_timeout_s=settings.smpp_submit_timeout_s,
            reconnect_max_s=settings.smpp_reconnect_max_s,
        )

    async def start(self, on_reports: ReportSink, on_inbound: InboundSink) -> None:
        self._keeper = asyncio.create_task(self._keep_session(on_reports, on_inbound), name="smpp-session")
        # Give the first bind a moment, so the first messages do not all start with a failure.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._bound.wait(), 5)

    async def stop(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        await self._close()

    async def _close(self) -> None:
        self._bound.clear()
        smsc, client = self._smsc, self._client
        self._smsc = self._client = None
        if smsc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(smsc.unbind(), 2)
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.stop(), 2)

    async def _keep_session(self, on_reports: ReportSink, on_inbound: InboundSink) -> None:
        failures = 0
        while True:
            try:
                client = smpp34.Client(
                    self.host,
                    self.port,
                    self._system_id,
                    self._password,
                    bind_type="TRX",
                    system_type=self._system_type,
                    connect_timeout_ms=5000,
                )
                smsc = await client.connect()
            except (smpp34.SmppError, OSError) as exc:
                failures += 1
                # Full jitter: many notifier instances must not hammer a recovering SMSC in step.
                delay = random.uniform(0, min(self._reconnect_max_s, 0.2 * 2**failures))
                log.warning("SMPP bind to %s:%d failed (%s); retrying in %.1fs", self.host, self.port, exc, delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            self._client, self._smsc = client, smsc
            self.binds += 1
            self._bound.set()
            log.info("SMPP bound to %s:%d as %s", self.host, self.port, self._system_id)
            try:
                await self._read(smsc, on_reports, on_inbound)
            except (smpp34.SmppError, OSError) as exc:  # a broken session is re-bound like a closed one
                log.warning("SMPP session error: %s", exc)
            finally:
                await self._close()
            log.warning("SMPP session to %s:%d ended; re-binding", self.host, self.port)

    async def _read(self, smsc: smpp34.Smsc, on_reports: ReportSink, on_inbound: InboundSink) -> None:
        while True:
            event = await smsc.next()
            if isinstance(event, smpp34.Disconnected):
                return
            try:
                if event.esm_class & ESM_DELIVERY_RECEIPT:
                    await on_reports(self._receipt(event))
                else:
                    text = decode_short_message(event.short_message, event.data_coding, event.esm_class)
                    await on_inbound(InboundSms(phone=f"+{event.source_addr.lstrip('+')}", text=text))
            except Exception:  # the SMSC already has its ack; a bad report must not end the session
                log.exception("could not handle a deliver_sm from %s", event.source_addr)

    def _receipt(self, event: smpp34.DeliverSmEvent) -> list[DeliveryReport]:
        tlvs = {tlv.tag: tlv for tlv in event.tlvs}
        if TLV_RECEIPTED_MESSAGE_ID in tlvs and TLV_MESSAGE_STATE in tlvs:
            state = tlvs[TLV_MESSAGE_STATE].as_int() or 0
            pid = (tlvs[TLV_RECEIPTED_MESSAGE_ID].as_string() or "").rstrip("\x00")
            if state in MESSAGE_STATES and pid:
                return [DeliveryReport(pid, MESSAGE_STATES[state], f"message_state:{state}")]
        return self._text_receipt(event.short_message)

    def _text_receipt(self, body: bytes) -> list[DeliveryReport]:
        """A receipt in the short message's text (`id:... stat:DELIVRD ...`), for SMSCs without the TLVs."""
        match = RECEIPT.search(body.decode("latin-1"))
        if match is None:
            raise ValueError(f"not a delivery receipt: {body[:100]!r}")
        return [DeliveryReport(match["id"], self.map_status(match["stat"]), match["stat"])]

    def map_status(self, raw: str) -> ReceiptStatus:
        return map_receipt_status(raw)

    async def send(self, sms: OutgoingSms) -> Accepted:
        smsc = self._smsc
        if smsc is None or not self._bound.is_set():
            raise ProviderFailure(FailureKind.TRANSIENT, "SMPP session not bound", retry_after_s=1.0)
        done = self._accepted_parts.setdefault(sms.message_id, {})
        parts = submissions(sms)
        for index, (payload, esm_class) in enumerate(parts):
            if index in done:
                continue  # accepted by an earlier attempt: submitting it again would duplicate a part
            done[index] = await self._submit(smsc, sms, payload, esm_class)
        self._accepted_parts.pop(sms.message_id, None)
        return Accepted(tuple(done[i] for i in range(len(parts))), per_segment=True)

    async def _submit(self, smsc: smpp34.Smsc, sms: OutgoingSms, payload: bytes, esm_class: int) -> str:
        try:
            response = await asyncio.wait_for(
                smsc.submit_sm(
                    sms.phone.lstrip("+"),
                    payload,
                    esm_class=esm_class,
                    data_coding=DATA_CODING[sms.encoding],
                    registered_delivery=1,  # a receipt for the final outcome of each segment
                    **addresses(sms),  # type: ignore[arg-type]
                ),
                self._submit_timeout_s,
            )
        except TimeoutError as exc:
            raise ProviderFailure(FailureKind.TRANSIENT, "submit_sm timed out") from exc
        except (smpp34.SmppError, OSError) as exc:
            raise ProviderFailure(FailureKind.TRANSIENT, f"SMPP: {exc}") from exc
        status = response.command_status
        if response.is_success and response.message_id:
            return response.message_id
        if status in THROTTLING:
            raise ProviderFailure(FailureKind.TRANSIENT, f"SMSC throttling (0x{status:08x})", retry_after_s=1.0)
        raise ProviderFailure(FailureKind.PERMANENT, f"submit_sm refused (command_status 0x{status:08x})")
