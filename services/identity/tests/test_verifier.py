"""servicekit.jwks against identity: tokens verified from the JWKS over HTTP, rotations of keys and secrets under
traffic without a refusal, and a revoked client refused within a second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from joserfc import jws, jwt
from joserfc.jwk import ECKey, OctKey, OKPKey

from contracts.topics import Topic
from identity.keys import rotate_signing_key
from identity.settings import IdentitySettings
from servicekit.jwks import InvalidToken, Jwks, JwksVerifier, RevokedClients

ISSUER, AUDIENCE = "http://identity", "order-status-api"


@pytest.fixture
async def jwks_http(identity_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=identity_app), base_url=ISSUER) as http:
        yield http


def _verifier(http: httpx.AsyncClient, revoked: RevokedClients | None = None, **jwks: float) -> JwksVerifier:
    return JwksVerifier(
        Jwks(f"{ISSUER}/.well-known/jwks.json", http, **jwks), issuer=ISSUER, audience=AUDIENCE, revoked=revoked
    )


async def test_the_verifier_returns_partner_client_and_scopes(integrator: Any, jwks_http: httpx.AsyncClient) -> None:
    client = await integrator.new_client("erp", ("orders:read", "statuses:read"))
    token = (await integrator.token(client["client_id"], client["client_secret"])).json()["access_token"]

    identity = await _verifier(jwks_http).verify(token)

    assert identity.partner_id == "acme"
    assert identity.client_id == client["client_id"]
    assert identity.scopes == {"orders:read", "statuses:read"}
    with pytest.raises(InvalidToken, match="aud"):
        await JwksVerifier(Jwks(f"{ISSUER}/.well-known/jwks.json", jwks_http), issuer=ISSUER, audience="x").verify(
            token
        )
    with pytest.raises(InvalidToken, match="iss"):
        await JwksVerifier(Jwks(f"{ISSUER}/.well-known/jwks.json", jwks_http), issuer="y", audience=AUDIENCE).verify(
            token
        )


# --- against a JWKS of the test's own (what identity never issues) -----------------------------------------


class OwnIssuer:
    """A JWKS served by an httpx transport, with keys the test signs with, counting the fetches."""

    def __init__(self) -> None:
        self.ed25519 = OKPKey.generate_key("Ed25519", private=True)
        self.p256 = ECKey.generate_key("P-256", private=True)
        self.fetches = 0
        self.published = [self.ed25519.as_dict(private=False, kid="ed", alg="Ed25519", use="sig")]

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        return httpx.Response(200, json={"keys": self.published})

    def verifier(self, **jwks: float) -> JwksVerifier:
        http = httpx.AsyncClient(transport=httpx.MockTransport(self.handler))
        return JwksVerifier(Jwks(f"{ISSUER}/.well-known/jwks.json", http, **jwks), issuer=ISSUER, audience=AUDIENCE)

    def token(self, header: dict[str, Any] | None = None, key: Any = None, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "acme", "client_id": "cli_x", "scope": "a b", "exp": now + 60}
        body.update(claims)
        header = header or {"alg": "Ed25519", "typ": "at+jwt", "kid": "ed"}
        return jwt.encode(
            header, {k: v for k, v in body.items() if v is not None}, key or self.ed25519, algorithms=[header["alg"]]
        )


async def test_the_verifier_refuses_what_is_not_a_current_access_token_of_its_issuer() -> None:
    own = OwnIssuer()
    verifier = own.verifier()
    assert (await verifier.verify(own.token())).scopes == {"a", "b"}

    refusals = {
        "expired": own.token(exp=int(time.time()) - 120),
        "no exp": own.token(exp=None),
        "no client_id": own.token(client_id=None),
        "typ JWT": own.token({"alg": "Ed25519", "typ": "JWT", "kid": "ed"}),
        "no typ": own.token({"alg": "Ed25519", "kid": "ed"}),
        "unknown kid": own.token({"alg": "Ed25519", "typ": "at+jwt", "kid": "other"}),
        "another key": own.token(key=OKPKey.generate_key("Ed25519", private=True)),
        "HS256": jwt.encode(
            {"alg": "HS256", "typ": "at+jwt", "kid": "ed"}, {"sub": "acme"}, OctKey.import_key(b"k" * 32)
        ),
        "garbage": "not.a.token",
    }
    for what, token in refusals.items():
        with pytest.raises(InvalidToken):
            await verifier.verify(token)
            pytest.fail(f"accepted a token with {what}")
    unsigned = own.token().rsplit(".", 1)[0] + "."
    with pytest.raises(InvalidToken):
        await verifier.verify(unsigned)
    # A little clock skew is tolerated.
    assert await verifier.verify(own.token(exp=int(time.time()) - 5))


async def test_es256_keys_verify_too() -> None:
    own = OwnIssuer()
    own.published.append(own.p256.as_dict(private=False, kid="ec", alg="ES256", use="sig"))
    token = own.token({"alg": "ES256", "typ": "at+jwt", "kid": "ec"}, key=own.p256)
    assert (await own.verifier().verify(token)).partner_id == "acme"


async def test_an_unknown_kid_refreshes_the_jwks_at_most_once_per_interval() -> None:
    own = OwnIssuer()
    verifier = own.verifier(min_refresh_interval_s=0.5)
    await verifier.verify(own.token())
    assert own.fetches == 1

    forged = own.token({"alg": "Ed25519", "typ": "at+jwt", "kid": "made-up"})
    await asyncio.gather(*(_refused(verifier, forged) for _ in range(50)))
    assert own.fetches == 1  # within the interval: no fetch at all

    await asyncio.sleep(0.6)
    newer = OKPKey.generate_key("Ed25519", private=True)
    own.published.append(newer.as_dict(private=False, kid="new", alg="Ed25519", use="sig"))
    results = await asyncio.gather(
        *(verifier.verify(own.token({"alg": "Ed25519", "typ": "at+jwt", "kid": "new"}, key=newer)) for _ in range(20))
    )
    assert len(results) == 20
    assert own.fetches == 2  # one shared fetch found the new key


async def test_requests_arriving_during_a_fetch_wait_for_it() -> None:
    """A cold cache (a service just started, or a rotation's key): the requests that arrive while the JWKS is on
    its way wait for it instead of refusing a token whose key it brings."""
    own = OwnIssuer()

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.2)
        return own.handler(request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(slow))
    verifier = JwksVerifier(Jwks(f"{ISSUER}/.well-known/jwks.json", http), issuer=ISSUER, audience=AUDIENCE)
    token = own.token()
    results = await asyncio.gather(*(verifier.verify(token) for _ in range(20)))
    assert len(results) == 20
    assert own.fetches == 1


async def _accepted(verifier: JwksVerifier, token: str) -> bool:
    try:
        await verifier.verify(token)
    except InvalidToken:
        return False
    return True


async def _refused(verifier: JwksVerifier, token: str) -> None:
    with pytest.raises(InvalidToken):
        await verifier.verify(token)


async def test_the_keys_held_keep_verifying_while_the_issuer_is_away() -> None:
    own = OwnIssuer()
    verifier = own.verifier(max_age_s=0.0, min_refresh_interval_s=0.0)
    await verifier.verify(own.token())
    own.handler = lambda request: httpx.Response(503)  # type: ignore[method-assign]
    assert (await verifier.verify(own.token())).partner_id == "acme"


# --- under traffic --------------------------------------------------------------------------------------


async def test_rotating_the_signing_key_and_the_secret_while_requests_flow_refuses_nothing(
    identity_app: FastAPI,
    identity_settings: IdentitySettings,
    integrator: Any,
    acme: httpx.AsyncClient,
    jwks_http: httpx.AsyncClient,
) -> None:
    """The verifier keeps the JWKS for 0.5 s and may refresh on an unknown kid only every 10 s; identity publishes
    a key 2 s before it signs. Two key rotations and two secret rotations happen while tokens are fetched and
    verified without a pause: not one token request or verification fails."""
    verifier = _verifier(jwks_http, max_age_s=0.5, min_refresh_interval_s=10.0)
    client = await integrator.new_client("busy", ("orders:read",))
    secret = {"current": client["client_secret"]}
    failures: list[str] = []
    kids: set[str] = set()
    done = asyncio.Event()

    async def traffic() -> None:
        while not done.is_set():
            response = await integrator.token(client["client_id"], secret["current"])
            if response.status_code != 200:
                failures.append(f"token: {response.status_code} {response.text}")
                continue
            try:
                await verifier.verify(response.json()["access_token"])
                kids.add(jws.extract_compact(response.json()["access_token"].encode()).headers()["kid"])
            except InvalidToken as exc:
                failures.append(f"verify: {exc}")

    async def rotations() -> None:
        for _ in range(2):
            await rotate_signing_key(
                identity_app.state.runtime.pool, identity_settings, publish_ahead=timedelta(seconds=2)
            )
            rotated = await acme.post(f"/v1/clients/{client['client_id']}/rotate-secret")
            assert rotated.status_code == 200
            # The integrator deploys its new secret a little later: the old one still works meanwhile.
            await asyncio.sleep(0.3)
            secret["current"] = rotated.json()["client_secret"]
            await asyncio.sleep(2.0)
        done.set()

    await asyncio.gather(rotations(), *(traffic() for _ in range(3)))

    assert failures == []
    assert len(kids) == 3  # the tokens were signed by three keys in turn


async def test_a_revoked_client_is_refused_within_a_second(
    identity_settings: IdentitySettings, integrator: Any, acme: httpx.AsyncClient, jwks_http: httpx.AsyncClient
) -> None:
    revoked = RevokedClients(
        identity_settings.kafka_bootstrap_servers, identity_settings.topic(Topic.CLIENT_REVOCATIONS)
    )
    await revoked.start()
    try:
        await asyncio.wait_for(revoked.ready.wait(), 10)
        verifier = _verifier(jwks_http, revoked)
        client = await integrator.new_client()
        bystander = await integrator.new_client("bystander")
        token = (await integrator.token(client["client_id"], client["client_secret"])).json()["access_token"]
        other = (await integrator.token(bystander["client_id"], bystander["client_secret"])).json()["access_token"]
        assert (await verifier.verify(token)).client_id == client["client_id"]

        started = time.monotonic()
        assert (await acme.post(f"/v1/clients/{client['client_id']}/revoke")).status_code == 200
        while await _accepted(verifier, token):
            assert time.monotonic() - started < 1.0, "a revoked client's token was still accepted after a second"
            await asyncio.sleep(0.01)
        with pytest.raises(InvalidToken, match="revoked"):
            await verifier.verify(token)
        assert (await verifier.verify(other)).client_id == bystander["client_id"]
    finally:
        await revoked.stop()


async def test_the_revocations_are_read_from_the_beginning_by_a_verifier_started_later(
    identity_settings: IdentitySettings, integrator: Any, acme: httpx.AsyncClient
) -> None:
    client = await integrator.new_client()
    await acme.post(f"/v1/clients/{client['client_id']}/revoke")

    revoked = RevokedClients(
        identity_settings.kafka_bootstrap_servers, identity_settings.topic(Topic.CLIENT_REVOCATIONS)
    )
    await revoked.start()
    try:
        await asyncio.wait_for(revoked.ready.wait(), 10)
        assert revoked.is_revoked("acme", client["client_id"])
        assert not revoked.is_revoked("globex", client["client_id"])
    finally:
        await revoked.stop()
