"""POST /oauth/token (RFC 6749 client credentials) and the access tokens it issues (RFC 9068)."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from joserfc import jwt
from joserfc.jwk import KeySet

from identity.settings import IdentitySettings


async def _claims(anonymous: httpx.AsyncClient, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    keys = KeySet.import_key_set((await anonymous.get("/.well-known/jwks.json")).json())
    decoded = jwt.decode(token, keys, algorithms=["Ed25519"])
    return dict(decoded.header), dict(decoded.claims)


def _oauth_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == body["code"] == error
    assert body["error_description"]
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"


async def test_a_client_gets_an_ed25519_access_token_with_basic_and_with_post(
    integrator: Any, anonymous: httpx.AsyncClient, identity_settings: IdentitySettings
) -> None:
    client = await integrator.new_client("erp", ("orders:read", "orders:write"))

    by_basic = await integrator.token(client["client_id"], client["client_secret"])
    by_post = await anonymous.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
        },
    )

    for response in (by_basic, by_post):
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        body = response.json()
        assert body["token_type"] == "Bearer"
        assert body["expires_in"] == 900
        assert body["scope"] == "orders:read orders:write"
        header, claims = await _claims(anonymous, body["access_token"])
        assert header["typ"] == "at+jwt" and header["alg"] == "Ed25519" and header["kid"]
        assert claims["iss"] == "http://identity"
        assert claims["aud"] == identity_settings.token_audience
        assert claims["sub"] == "acme"
        assert claims["client_id"] == client["client_id"]
        assert claims["scope"] == "orders:read orders:write"
        assert claims["exp"] - claims["iat"] == 900
        assert claims["jti"]
    assert (await _claims(anonymous, by_basic.json()["access_token"]))[1]["jti"] != (
        await _claims(anonymous, by_post.json()["access_token"])
    )[1]["jti"]


async def test_a_token_may_ask_for_fewer_scopes_but_not_more(integrator: Any) -> None:
    client = await integrator.new_client("erp", ("orders:read", "orders:write"))
    narrowed = await integrator.token(client["client_id"], client["client_secret"], scope="orders:read")
    assert narrowed.status_code == 200
    assert narrowed.json()["scope"] == "orders:read"
    more = await integrator.token(client["client_id"], client["client_secret"], scope="orders:read campaigns:write")
    _oauth_error(more, 400, "invalid_scope")
    assert "campaigns:write" in more.json()["error_description"]
    unknown = await integrator.token(client["client_id"], client["client_secret"], scope="everything")
    _oauth_error(unknown, 400, "invalid_scope")


async def test_a_wrong_secret_an_unknown_client_and_no_credentials_are_invalid_client(
    integrator: Any, anonymous: httpx.AsyncClient
) -> None:
    client = await integrator.new_client()
    wrong = await integrator.token(client["client_id"], "cs_wrong")
    _oauth_error(wrong, 401, "invalid_client")
    assert wrong.headers["www-authenticate"].startswith("Basic")
    unknown = await integrator.token("cli_" + "x" * 24, client["client_secret"])
    _oauth_error(unknown, 401, "invalid_client")
    malformed = await integrator.token("'; drop table api_clients", client["client_secret"])
    _oauth_error(malformed, 401, "invalid_client")
    none = await anonymous.post("/oauth/token", data={"grant_type": "client_credentials"})
    _oauth_error(none, 401, "invalid_client")
    bearer = await anonymous.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, headers={"Authorization": "Bearer x"}
    )
    _oauth_error(bearer, 401, "invalid_client")
    not_base64 = await anonymous.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, headers={"Authorization": "Basic !!!"}
    )
    _oauth_error(not_base64, 401, "invalid_client")


async def test_malformed_requests_are_invalid_request_or_unsupported_grant_type(
    integrator: Any, anonymous: httpx.AsyncClient
) -> None:
    client = await integrator.new_client()
    cid, secret = client["client_id"], client["client_secret"]
    basic = "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode()

    _oauth_error(await integrator.token(cid, secret, grant_type="password"), 400, "unsupported_grant_type")
    missing = await anonymous.post("/oauth/token", data={}, headers={"Authorization": basic})
    _oauth_error(missing, 400, "invalid_request")
    as_json = await anonymous.post(
        "/oauth/token", json={"grant_type": "client_credentials"}, headers={"Authorization": basic}
    )
    _oauth_error(as_json, 400, "invalid_request")
    twice = await anonymous.post(
        "/oauth/token",
        content="grant_type=client_credentials&scope=orders:read&scope=orders:read",
        headers={"Authorization": basic, "Content-Type": "application/x-www-form-urlencoded"},
    )
    _oauth_error(twice, 400, "invalid_request")
    both_methods = await anonymous.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": cid, "client_secret": secret},
        headers={"Authorization": basic},
    )
    _oauth_error(both_methods, 400, "invalid_request")
    nul = await anonymous.post(
        "/oauth/token",
        content="grant_type=client_credentials&scope=%00",
        headers={"Authorization": basic, "Content-Type": "application/x-www-form-urlencoded"},
    )
    _oauth_error(nul, 400, "invalid_request")
    not_utf8 = await anonymous.post(
        "/oauth/token",
        content="grant_type=client_credentials&scope=%ff",
        headers={"Authorization": basic, "Content-Type": "application/x-www-form-urlencoded"},
    )
    _oauth_error(not_utf8, 400, "invalid_request")
    huge = await anonymous.post(
        "/oauth/token",
        content="grant_type=client_credentials&scope=" + "a" * 70_000,
        headers={"Authorization": basic, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert huge.status_code == 413


async def test_unrecognized_parameters_are_ignored_whatever_they_hold(integrator: Any) -> None:
    """RFC 6749 3.1: the server MUST ignore them; sent twice, or holding a NUL, they answered 400."""
    client = await integrator.new_client()
    cid, secret = client["client_id"], client["client_secret"]
    response = await integrator.http.post(
        "/oauth/token",
        content="grant_type=client_credentials&extra=1&extra=2&other=a%00b",
        headers={
            "Authorization": "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode(),
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert response.status_code == 200, response.text
    _oauth_error(await integrator.token(cid, secret, scope="orders:read\x00"), 400, "invalid_request")


async def test_a_revoked_or_expired_client_gets_no_token(
    integrator: Any, acme: httpx.AsyncClient, database: str
) -> None:
    revoked = await integrator.new_client("revoked")
    await acme.post(f"/v1/clients/{revoked['client_id']}/revoke")
    _oauth_error(await integrator.token(revoked["client_id"], revoked["client_secret"]), 401, "invalid_client")

    expiring = await integrator.new_client("expiring")
    soon = datetime.now(UTC) + timedelta(minutes=5)
    conn = await asyncpg.connect(database)
    try:
        await conn.execute("UPDATE api_clients SET expires_at = $1 WHERE client_id = $2", soon, expiring["client_id"])
        token = await integrator.token(expiring["client_id"], expiring["client_secret"])
        assert token.status_code == 200
        assert token.json()["expires_in"] <= 300  # never outlives its client
        past = datetime.now(UTC) - timedelta(seconds=1)
        await conn.execute("UPDATE api_clients SET expires_at = $1 WHERE client_id = $2", past, expiring["client_id"])
    finally:
        await conn.close()
    _oauth_error(await integrator.token(expiring["client_id"], expiring["client_secret"]), 401, "invalid_client")
    assert (await acme.get(f"/v1/clients/{expiring['client_id']}")).json()["state"] == "expired"


async def test_after_a_rotation_both_secrets_work_for_the_grace_period_then_only_the_new_one(
    integrator: Any, acme: httpx.AsyncClient
) -> None:
    client = await integrator.new_client()
    cid, first = client["client_id"], client["client_secret"]

    rotated = (await acme.post(f"/v1/clients/{cid}/rotate-secret", json={"grace_period_s": 3600})).json()
    second = rotated["client_secret"]
    assert second != first
    assert rotated["previous_secret_expires_at"] is not None
    assert (await integrator.token(cid, first)).status_code == 200
    assert (await integrator.token(cid, second)).status_code == 200

    # Rotating again ends the first secret's grace at once: never more than two secrets work.
    third = (await acme.post(f"/v1/clients/{cid}/rotate-secret", json={"grace_period_s": 3600})).json()
    assert (await integrator.token(cid, first)).status_code == 401
    assert (await integrator.token(cid, second)).status_code == 200
    assert (await integrator.token(cid, third["client_secret"])).status_code == 200

    # No grace: the previous secret ends with the rotation (after a leak).
    fourth = (await acme.post(f"/v1/clients/{cid}/rotate-secret", json={"grace_period_s": 0})).json()
    assert fourth["previous_secret_expires_at"] is None
    assert (await integrator.token(cid, third["client_secret"])).status_code == 401
    assert (await integrator.token(cid, fourth["client_secret"])).status_code == 200


async def test_last_used_is_written_on_a_token_at_most_once_a_minute(
    integrator: Any, acme: httpx.AsyncClient, database: str
) -> None:
    client = await integrator.new_client()
    cid = client["client_id"]
    assert (await acme.get(f"/v1/clients/{cid}")).json()["last_used_at"] is None
    conn = await asyncpg.connect(database)
    try:

        async def row_version() -> str:
            # xmin changes with every write of the row, whether or not a value changed
            return str(await conn.fetchval("SELECT xmin FROM api_clients WHERE client_id = $1", cid))

        await asyncio.gather(*(integrator.token(cid, client["client_secret"]) for _ in range(5)))
        first = (await acme.get(f"/v1/clients/{cid}")).json()["last_used_at"]
        assert first is not None
        written = await row_version()
        for _ in range(3):
            assert (await integrator.token(cid, client["client_secret"])).status_code == 200
        assert await row_version() == written
        assert (await acme.get(f"/v1/clients/{cid}")).json()["last_used_at"] == first

        await conn.execute(
            "UPDATE api_clients SET last_used_at = now() - interval '61 seconds' WHERE client_id = $1", cid
        )
        await integrator.token(cid, client["client_secret"])
        assert (await acme.get(f"/v1/clients/{cid}")).json()["last_used_at"] > first
    finally:
        await conn.close()


async def test_the_token_endpoint_is_documented_as_a_form(anonymous: httpx.AsyncClient) -> None:
    document = (await anonymous.get("/openapi.json")).json()
    operation = document["paths"]["/oauth/token"]["post"]
    assert "application/x-www-form-urlencoded" in operation["requestBody"]["content"]
    assert {"200", "400", "401"} <= set(operation["responses"])
    jwks = document["paths"]["/.well-known/jwks.json"]["get"]["responses"]["200"]
    assert list(jwks["content"]) == ["application/jwk-set+json"]
    assert (await anonymous.get("/.well-known/jwks.json")).headers["content-type"] == "application/jwk-set+json"


async def test_the_platforms_own_client_gets_a_token_of_the_partner_it_names_for_the_person_it_names(
    integrator: Any, anonymous: httpx.AsyncClient, identity_settings: IdentitySettings
) -> None:
    """The console's tokens: client `console` with its configured secret, `partner_id` and `actor` in the form."""
    secret = identity_settings.console_client_secret.get_secret_value()
    form = {"grant_type": "client_credentials", "partner_id": "globex", "actor": "anna@globex.example"}
    answer = await anonymous.post("/oauth/token", data=form | {"scope": "orders:read"}, auth=("console", secret))
    assert answer.status_code == 200, answer.text
    _, claims = await _claims(anonymous, answer.json()["access_token"])
    assert (claims["sub"], claims["client_id"], claims["scope"]) == ("globex", "console", "orders:read")
    assert claims["act"] == {"sub": "anna@globex.example"}  # RFC 8693: who acts through the console

    everything = await anonymous.post("/oauth/token", data=form, auth=("console", secret))
    assert set(everything.json()["scope"].split()) == {
        "statuses:read", "statuses:write", "orders:read", "orders:write", "campaigns:read", "campaigns:write",
        "messages:read", "messages:write", "webhooks:manage", "clients:manage",
    }  # fmt: skip
    _oauth_error(await anonymous.post("/oauth/token", data=form, auth=("console", secret + "x")), 401, "invalid_client")
    no_partner = {"grant_type": "client_credentials"}
    _oauth_error(
        await anonymous.post("/oauth/token", data=no_partner, auth=("console", secret)), 400, "invalid_request"
    )

    client = await integrator.new_client("erp", ("orders:read",))  # an API client's token is its own partner's
    asks_for_another = {"grant_type": "client_credentials", "partner_id": "globex"}
    refused = await anonymous.post(
        "/oauth/token", data=asks_for_another, auth=(client["client_id"], client["client_secret"])
    )
    _oauth_error(refused, 400, "invalid_request")
