"""Rotation without a failed request (issue 30, item 4): while an API client's tokens flow to all four services
without a pause, identity's signing key is rotated (`python -m identity.keys rotate`, published a few seconds
before it signs) and the client's secret is rotated (both secrets work during the grace period): not one request
is refused.

Seamless needs every verifier to fetch the JWKS again sooner than the new key starts signing: here the services
keep it a second (TOKEN_JWKS_MAX_AGE_S) and identity reads its keys every half second (KEY_REFRESH_S), against a
publish-ahead of five seconds; in production 5 minutes against an hour. With the services' default (300 s) the new
key's first tokens arrive at a cache that knows nothing of it and fetched less than 10 s ago: refused.
(A revoked client refused within a second: tests/e2e/test_identity_tokens.py.)
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from devtools.platform import Platform, running
from devtools.pytest_plugin import Infrastructure

PUBLISH_AHEAD_S = 5
ROTATION_ENV = {"TOKEN_JWKS_MAX_AGE_S": "1", "KEY_REFRESH_S": "0.5"}
SCOPES = ["statuses:read", "orders:read", "campaigns:read", "messages:read"]
READS = {
    "status-registry": "/v1/statuses",
    "orders": "/v1/orders",
    "campaigns": "/v1/campaigns",
    "notifier": "/v1/messages",
}


@pytest.fixture
async def platform(infrastructure: Infrastructure, tmp_path: Path) -> AsyncIterator[Platform]:
    """All the services, with the short JWKS cache and key refresh the rotation needs (see the docstring)."""
    async with running(infrastructure, tmp_path, extra_env=ROTATION_ENV) as platform:
        yield platform


@dataclass
class Traffic:
    """What the loops saw: every answer's status by service, the keys that signed, the secrets that got tokens."""

    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    refusals: list[str] = field(default_factory=list)
    kids: list[str] = field(default_factory=list)
    secrets_used: Counter[str] = field(default_factory=Counter)
    secrets: list[str] = field(default_factory=list)  # the secrets the loops take turns with

    def answered(self, service: str, response: httpx.Response) -> None:
        self.statuses[(service, response.status_code)] += 1
        if response.status_code != 200:
            self.refusals.append(f"{service} {response.status_code} {response.text[:200]}")


def _kid(token: str) -> str:
    header = token.split(".", 1)[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


async def _flow(platform: Platform, client_id: str, traffic: Traffic, stop: asyncio.Event, loop: int) -> None:
    """A fresh token (from each secret in turn) for every round of one read on each of the four services."""
    async with httpx.AsyncClient(timeout=10) as http:
        turn = loop
        while not stop.is_set():
            secret = traffic.secrets[turn % len(traffic.secrets)]
            turn += 1
            answer = await http.post(
                f"{platform.url('identity')}/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(client_id, secret),
            )
            if answer.status_code != 200:
                traffic.refusals.append(f"token endpoint {answer.status_code} {answer.text[:200]}")
                continue
            token = answer.json()["access_token"]
            traffic.kids.append(_kid(token))
            traffic.secrets_used[secret] += 1
            headers = {"Authorization": f"Bearer {token}"}
            for service, path in READS.items():
                traffic.answered(service, await http.get(platform.url(service) + path, headers=headers))


async def _rotate_signing_key(platform: Platform) -> str:
    """`python -m identity.keys rotate` against identity's database; returns what it printed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "identity.keys", "rotate", "--publish-ahead", str(PUBLISH_AHEAD_S),
        env=platform.env("identity"), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    return output.decode()


async def _until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    began = time.monotonic()
    while not condition():
        assert time.monotonic() - began < timeout_s, f"not seen within {timeout_s} s: {what}"
        await asyncio.sleep(0.1)


async def test_rotating_the_signing_key_and_the_secret_under_traffic_refuses_nothing(platform: Platform) -> None:
    async with platform.client("identity", "acme") as admin:
        created = await admin.post("/v1/clients", json={"name": "ERP", "scopes": SCOPES})
        assert created.status_code == 201, created.text
        client_id, first_secret = created.json()["client_id"], created.json()["client_secret"]
        traffic = Traffic(secrets=[first_secret])
        stop = asyncio.Event()
        loops = [asyncio.create_task(_flow(platform, client_id, traffic, stop, n)) for n in range(3)]
        try:
            await _until(lambda: len(traffic.kids) >= 10, 20, "ten tokens through the four services")
            first_kid = traffic.kids[-1]

            printed = await _rotate_signing_key(platform)
            new_kid = printed.split()[0]
            assert new_kid != first_kid, printed
            await _until(lambda: new_kid in traffic.kids, PUBLISH_AHEAD_S + 10, f"a token signed by {new_kid}")
            signed_by_new = traffic.kids.count(new_kid)
            await _until(lambda: traffic.kids.count(new_kid) >= signed_by_new + 10, 20, "ten more with the new key")

            rotated = await admin.post(f"/v1/clients/{client_id}/rotate-secret", json={"grace_period_s": 600})
            assert rotated.status_code == 200, rotated.text
            second_secret = rotated.json()["client_secret"]
            first_before = traffic.secrets_used[first_secret]
            traffic.secrets.append(second_secret)  # both now: the old one in its grace period, and the new one
            await _until(
                lambda: (
                    traffic.secrets_used[second_secret] >= 10
                    and traffic.secrets_used[first_secret] >= first_before + 10
                ),
                20,
                "tokens from both secrets after the rotation",
            )
        finally:
            stop.set()
            await asyncio.gather(*loops)

    assert traffic.refusals == [], f"{len(traffic.refusals)} refused, first: {traffic.refusals[:3]}"
    assert set(traffic.kids) == {first_kid, new_kid}
    assert all(traffic.statuses[(service, 200)] >= 20 for service in READS), traffic.statuses
