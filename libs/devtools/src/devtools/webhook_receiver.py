"""A partner's webhook endpoint for the end-to-end tests, the integrators' guide test and the bench: a real HTTP
server on a local port that keeps every request it gets and checks each signature with the `standardwebhooks`
verifier, as an integrator's code would.

A receiver can be told to answer slowly (`delay_s`: a delivery in flight long enough to kill its sender), or with
another status (`status`, `retry_after`). It serves from a thread of its own, so a test's event loop that blocks a
moment (a process started, a broker killed) never delays an answer.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from devtools.platform import Platform

ENDPOINTS = "/v1/webhooks/endpoints"


@dataclass
class Request:
    """One request as it arrived: what the verifier needs, and when (wall clock, to compare with the broker's)."""

    headers: dict[str, str]
    body: bytes
    received_at: float
    status: int  # what the receiver answered (or was about to, when the sender went away first)
    # What the verifier said on arrival (the timestamp must be recent: checked then, as a real receiver does).
    payload: dict[str, Any] | None = None
    refused: Exception | None = None


@dataclass(frozen=True)
class Delivery:
    """A request whose signature verified: its `webhook-id` and the event it carried."""

    webhook_id: str
    payload: dict[str, Any]
    received_at: float
    status: int


class Receiver:
    """A webhook endpoint on 127.0.0.1 (`url`); `close()` stops it. `secrets` are the endpoint's signing secrets
    (`whsec_...`), known once the endpoint is registered: requests are kept as they came and verified when read."""

    def __init__(self, *, status: int = 204, delay_s: float = 0.0, retry_after: str | None = None) -> None:
        self.status, self.delay_s, self.retry_after = status, delay_s, retry_after
        self.secrets: list[str] = []
        self._requests: list[Request] = []
        self._webhook_ids: set[str] = set()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks"

    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def distinct(self) -> int:
        """How many messages (distinct webhook-ids) arrived, at least once each: cheap enough to poll."""
        with self._lock:
            return len(self._webhook_ids)

    def deliveries(self, *, answered_with: int | None = None) -> list[Delivery]:
        """Every request in arrival order, each verified with the endpoint's secrets (a request no secret verifies
        raises `standardwebhooks.WebhookVerificationError`); `answered_with` keeps only those answered so."""
        if not self.secrets:
            raise AssertionError("the receiver knows no secret yet: set `secrets` to the endpoint's")
        deliveries = []
        for request in self.requests():
            if request.payload is None and request.refused is None:  # it came before the secret was known
                self._verify(request)
            if request.refused is not None:
                raise request.refused
            if answered_with is None or request.status == answered_with:
                assert request.payload is not None
                deliveries.append(
                    Delivery(request.headers["webhook-id"], request.payload, request.received_at, request.status)
                )
        return deliveries

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _verify(self, request: Request) -> None:
        """Verify with each secret in turn (during a rotation either may sign); keep the payload or the refusal."""
        for secret in list(self.secrets):
            try:
                payload = Webhook(secret).verify(request.body, request.headers)
            except WebhookVerificationError as refusal:
                request.refused = refusal
                continue
            request.payload, request.refused = dict(payload), None
            return

    def _keep(self, request: Request) -> None:
        if self.secrets:
            self._verify(request)
        with self._lock:
            self._requests.append(request)
            self._webhook_ids.add(request.headers.get("webhook-id", ""))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:  # the sender died mid-request (killed): nothing arrived to verify or answer
                    return
                status = receiver.status
                receiver._keep(Request({k.lower(): v for k, v in self.headers.items()}, body, time.time(), status))
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                try:
                    self.send_response(status)
                    if receiver.retry_after is not None:
                        self.send_header("Retry-After", receiver.retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:  # the sender went away mid-request (killed, or timed out): nothing to answer
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: a test's output is its assertions

        return Handler


async def register(
    platform: Platform, partner: str, receiver: Receiver, event_types: Sequence[str] = ("order.status_changed",)
) -> dict[str, Any]:
    """Register `receiver` as an endpoint of `partner` (as its admin would, with `webhooks:manage`) and give it the
    endpoint's secret; returns the endpoint as created."""
    async with platform.client("webhooks", partner) as webhooks:
        created = await webhooks.post(ENDPOINTS, json={"url": receiver.url, "event_types": list(event_types)})
    created.raise_for_status()
    endpoint: dict[str, Any] = created.json()
    receiver.secrets.append(endpoint["secret"])
    return endpoint


def status_changes_in_order(deliveries: Iterable[Delivery]) -> dict[str, list[int]]:
    """Per order, the sequence numbers of its status changes in the order they first arrived (a delivery may come
    again: at least once, always under the webhook-id it came with first). Raises when one event came under two
    webhook-ids, which would make a receiver that drops duplicates by webhook-id handle it twice."""
    webhook_id_of: dict[str, str] = {}
    per_order: dict[str, list[int]] = defaultdict(list)
    for delivery in deliveries:
        if delivery.payload["type"] != "order.status_changed":
            continue
        event_id = delivery.payload["event_id"]
        first = webhook_id_of.setdefault(event_id, delivery.webhook_id)
        if first != delivery.webhook_id:
            raise AssertionError(f"event {event_id} came as {first} and again as {delivery.webhook_id}")
        data = delivery.payload["data"]
        if data["sequence"] not in per_order[data["order_id"]]:
            per_order[data["order_id"]].append(data["sequence"])
    return dict(per_order)
