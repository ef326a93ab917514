"""devtools.webhook_receiver: a request cut short by a sender that died mid-send (the end-to-end tests kill webhooks
instances mid-delivery) is not a delivery, so it neither fails the signature check nor counts."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
from standardwebhooks.webhooks import Webhook

from devtools.webhook_receiver import Receiver

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def signed_post(receiver: Receiver, body: bytes) -> None:
    now = datetime.fromtimestamp(int(time.time()), UTC)
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(SECRET).sign("msg_1", now, body.decode()),
        "content-type": "application/json",
    }
    httpx.post(receiver.url, content=body, headers=headers, timeout=5)


def test_a_request_cut_short_is_not_kept_and_a_whole_one_is_verified() -> None:
    with Receiver() as receiver:
        receiver.secrets = [SECRET]
        address = urlsplit(receiver.url)
        with socket.create_connection((address.hostname, address.port)) as cut_short:
            cut_short.sendall(
                b"POST /hooks HTTP/1.1\r\nHost: x\r\nwebhook-id: msg_0\r\nContent-Length: 100\r\n\r\n" + b'{"type":'
            )  # and the sender dies
        time.sleep(0.3)
        signed_post(receiver, b'{"type": "order.status_changed", "data": {}}')
        deliveries = receiver.deliveries()  # raises WebhookVerificationError for a kept request no secret verifies
    assert [d.webhook_id for d in deliveries] == ["msg_1"]
