"""Signing keys: encrypted at rest, published ahead of signing, kept until their tokens expire, one signing at a
time across instances, rotated by hand (service function and CLI) or by age."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from joserfc import jws
from joserfc.errors import JoseError

from devtools.pytest_plugin import wait_until
from identity.app import create_app
from identity.keys import KeyCipher, rotate_signing_key
from identity.settings import IdentitySettings


async def _kids(http: httpx.AsyncClient) -> list[str]:
    response = await http.get("/.well-known/jwks.json")
    assert response.status_code == 200
    return [key["kid"] for key in response.json()["keys"]]


async def _signed_by(integrator: Any, client: dict[str, Any]) -> str:
    response = await integrator.token(client["client_id"], client["client_secret"])
    assert response.status_code == 200, response.text
    return str(jws.extract_compact(response.json()["access_token"].encode()).headers()["kid"])


def _pool(app: FastAPI) -> asyncpg.Pool:
    return app.state.runtime.pool  # type: ignore[no-any-return]


async def test_the_jwks_serves_public_keys_only_with_a_max_age(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/.well-known/jwks.json")
    assert response.headers["cache-control"] == "public, max-age=300"
    assert response.headers["content-type"].startswith("application/jwk-set+json")
    (key,) = response.json()["keys"]
    assert key["kty"] == "OKP" and key["crv"] == "Ed25519" and key["alg"] == "Ed25519" and key["use"] == "sig"
    assert "d" not in key


async def test_private_keys_are_encrypted_at_rest(identity_app: FastAPI, identity_settings: IdentitySettings) -> None:
    async with _pool(identity_app).acquire() as conn:
        sealed = await conn.fetchval("SELECT private_key_encrypted FROM signing_keys")
    assert "PRIVATE KEY" not in sealed
    assert len(sealed.split(".")) == 5  # a compact JWE
    KeyCipher.from_secret(identity_settings.key_encryption_secret.get_secret_value()).open(sealed)
    with pytest.raises(JoseError):
        KeyCipher.from_secret("another-secret-of-at-least-32-characters").open(sealed)


async def test_a_new_key_is_published_before_it_signs_and_the_old_one_until_its_tokens_expire(
    identity_app: FastAPI, identity_settings: IdentitySettings, integrator: Any, anonymous: httpx.AsyncClient
) -> None:
    client = await integrator.new_client()
    (old,) = await _kids(anonymous)
    assert await _signed_by(integrator, client) == old

    new = await rotate_signing_key(_pool(identity_app), identity_settings, publish_ahead=timedelta(seconds=1.5))

    async def published() -> bool:
        return await _kids(anonymous) == [old, new.kid]

    await wait_until(published, timeout_s=5, what="the new key in the JWKS")
    assert await _signed_by(integrator, client) == old  # published, not signing yet

    async def signing() -> bool:
        return await _signed_by(integrator, client) == new.kid

    await wait_until(signing, timeout_s=5, what="the new key signing")
    assert await _kids(anonymous) == [old, new.kid]  # the old key's tokens still verify
    async with _pool(identity_app).acquire() as conn:
        kept_until = await conn.fetchval("SELECT published_until - signs_until FROM signing_keys WHERE kid = $1", old)
        assert kept_until == identity_settings.key_outlives_signing
        assert kept_until > identity_settings.token_ttl
        # Once its last token has expired, the old key leaves the JWKS.
        await conn.execute("UPDATE signing_keys SET published_until = now() WHERE kid = $1", old)

    async def retired() -> bool:
        return await _kids(anonymous) == [new.kid]

    await wait_until(retired, timeout_s=5, what="the old key gone from the JWKS")


async def test_rotations_at_once_make_one_pending_key(
    identity_app: FastAPI, identity_settings: IdentitySettings
) -> None:
    rotated = await asyncio.gather(*(rotate_signing_key(_pool(identity_app), identity_settings) for _ in range(10)))
    assert len({key.kid for key in rotated}) == 1
    async with _pool(identity_app).acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM signing_keys") == 2


@pytest.fixture
async def second_instance(identity_settings: IdentitySettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(identity_settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://identity") as http,
    ):
        yield http


async def test_two_instances_sign_with_the_same_key_and_switch_together(
    identity_app: FastAPI,
    identity_settings: IdentitySettings,
    integrator: Any,
    second_instance: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
) -> None:
    client = await integrator.new_client()
    other = type(integrator)(console=integrator.console, http=second_instance)
    (first,) = await _kids(anonymous)
    assert await _kids(second_instance) == [first]  # the second instance made no key of its own
    assert await _signed_by(other, client) == first

    new = await rotate_signing_key(_pool(identity_app), identity_settings, publish_ahead=timedelta(seconds=1))

    async def both_switched() -> bool:
        return {await _signed_by(integrator, client), await _signed_by(other, client)} == {new.kid}

    await wait_until(both_switched, timeout_s=5, what="both instances signing with the new key")
    assert await _kids(second_instance) == await _kids(anonymous) == [first, new.kid]


async def test_the_signing_key_is_rotated_by_age(infrastructure: Any, database: str, topic_prefix: str) -> None:
    settings = IdentitySettings(
        database_url=database,
        kafka_bootstrap_servers=infrastructure.kafka_bootstrap,
        kafka_topic_prefix=topic_prefix,
        key_refresh_s=0.2,
        key_rotate_after_s=1.0,
        key_publish_ahead_s=60.0,
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://identity") as http,
    ):

        async def rotated() -> bool:
            return len(await _kids(http)) == 2

        await wait_until(rotated, timeout_s=10, what="a rotation by age")
        await asyncio.sleep(1.5)  # older again, but its successor is pending: no third key
        assert len(await _kids(http)) == 2


async def test_the_cli_rotates(identity_app: FastAPI, anonymous: httpx.AsyncClient, database: str) -> None:
    (old,) = await _kids(anonymous)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "identity.keys", "rotate", "--publish-ahead", "0"],
        env={**os.environ, "DATABASE_URL": database},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    new = done.stdout.split()[0]
    assert new != old
    assert "signs from" in done.stdout

    async def published() -> bool:
        return await _kids(anonymous) == [old, new]

    await wait_until(published, timeout_s=5, what="the CLI's key in the JWKS")
