"""SSRF: with private targets not allowed (production's setting), an endpoint whose host resolves to a loopback,
private, link-local, metadata... address is refused at registration, and a delivery whose host resolves to one
by then (DNS rebinding) is not sent."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable

import asyncpg
import httpx
import pytest

from devtools.pytest_plugin import wait_until
from webhooks.domain import forbidden_address
from webhooks.settings import WebhooksSettings
from webhooks.targets import TargetGuard, TargetRefused

from .conftest import Receiver, create_endpoint, message_log, status_changed

Publish = Callable[..., Awaitable[None]]
PUBLIC = "93.184.215.14"  # a public address, given as such: no DNS look-up


@pytest.fixture
def webhooks_settings(webhooks_settings: WebhooksSettings) -> WebhooksSettings:
    """conftest's settings, with private targets refused as in production."""
    return webhooks_settings.model_copy(update={"webhooks_allow_private_targets": False})


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
     "224.0.0.1", "240.0.0.1", "::1", "fd00:ec2::254", "fe80::1", "::ffff:127.0.0.1", "ff02::1"],
)  # fmt: skip
def test_every_non_public_address_is_forbidden(address: str) -> None:
    assert forbidden_address(ipaddress.ip_address(address)) is not None


def test_public_addresses_are_allowed() -> None:
    assert forbidden_address(ipaddress.ip_address(PUBLIC)) is None
    assert forbidden_address(ipaddress.ip_address("2606:4700::1111")) is None


async def test_the_guard_connects_to_the_address_it_checked() -> None:
    target = await TargetGuard(allow_private=False).check(f"https://{PUBLIC}:8443/hooks?x=1")
    assert target.url == f"https://{PUBLIC}:8443/hooks?x=1"
    with pytest.raises(TargetRefused) as refused:
        await TargetGuard(allow_private=False).check("http://localhost:8080/hooks")
    assert refused.value.code == "target_not_allowed"


async def test_private_targets_are_refused_at_registration(acme: httpx.AsyncClient) -> None:
    for url in (
        "http://127.0.0.1:8080/hooks",
        "http://localhost/hooks",
        "http://169.254.169.254/latest/meta-data",
        "http://[fd00:ec2::254]/",
        "https://10.0.0.5/hooks",
        "http://[::1]:9000/",
    ):
        refused = await acme.post("/v1/webhooks/endpoints", json={"url": url, "event_types": ["sms.failed"]})
        assert refused.status_code == 422, url
        assert refused.json()["code"] == "target_not_allowed", refused.json()
        assert refused.json()["errors"][0]["field"] == "url"
    unknown = await acme.post(
        "/v1/webhooks/endpoints", json={"url": "https://no-such-host.invalid/x", "event_types": ["sms.failed"]}
    )
    assert unknown.status_code == 422
    assert unknown.json()["code"] == "target_unresolvable"
    created = await create_endpoint(acme, f"https://{PUBLIC}/hooks")
    moved = await acme.patch(
        f"/v1/webhooks/endpoints/{created['id']}", json={"url": "http://127.0.0.1/x"}, headers={"If-Match": "*"}
    )
    assert moved.status_code == 422
    assert moved.json()["code"] == "target_not_allowed"


async def test_a_delivery_to_a_host_that_now_resolves_privately_is_not_sent(
    acme: httpx.AsyncClient, receiver: Receiver, publish: Publish, database: str
) -> None:
    endpoint = await create_endpoint(acme, f"https://{PUBLIC}/hooks")
    # As if its DNS name pointed somewhere public at registration and at the receiver on loopback now.
    conn = await asyncpg.connect(database)
    try:
        await conn.execute("UPDATE endpoints SET url = $1", f"{receiver.url}/hooks")
    finally:
        await conn.close()
    await publish(status_changed())

    async def attempted() -> bool:
        log = await message_log(acme, endpoint["id"])
        return bool(log and log[0]["attempts"])

    await wait_until(attempted, what="an attempt")
    (message,) = await message_log(acme, endpoint["id"])
    attempt = message["attempts"][0]
    assert attempt["response_status"] is None
    assert attempt["error"].startswith("target_not_allowed: 127.0.0.1 resolves to 127.0.0.1, a loopback address")
    assert message["state"] == "pending"  # tried again on the schedule, should the name resolve publicly again
    assert receiver.received == []
