"""Identity's rules, with no I/O: API clients and their secrets, scopes, the OAuth2 token request, and the
schedule of the signing keys (which key signs when, which keys are published)."""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field, field_validator

from contracts.identity import CLIENT_ID_PATTERN, FIRST_PARTY_CLIENT_ID, ClientId, Scope
from contracts.primitives import PARTNER_ID_PATTERN, DisplayName, RequestDatetime, UtcDatetime

CLIENT_ID_PREFIX = "cli_"
SECRET_PREFIX = "cs_"  # says what a leaked string is (secret scanners match on it) and where it belongs
_ALPHANUMERIC = string.ascii_letters + string.digits


def new_client_id() -> str:
    return CLIENT_ID_PREFIX + "".join(secrets.choice(_ALPHANUMERIC) for _ in range(24))


def new_client_secret() -> str:
    """256 random bits: nobody guesses it, so its hash needs no cost against guessing (see services.SecretHasher)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


# --- API clients ---------------------------------------------------------------------------------


class ClientState(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"  # its expiry passed: no new tokens, tokens issued before end at the expiry
    REVOKED = "revoked"  # final: no new tokens, and every service refuses its tokens at once


class NewClient(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: DisplayName = Field(description="Unique among the partner's clients that are not revoked")
    scopes: list[Scope] = Field(min_length=1, max_length=len(Scope), description="What its tokens may do")
    expires_at: RequestDatetime | None = Field(
        default=None, description="After this instant the client gets no token; null: it does not expire"
    )

    @field_validator("scopes")
    @classmethod
    def _each_once(cls, scopes: list[Scope]) -> list[Scope]:
        if len(set(scopes)) != len(scopes):
            raise ValueError("name each scope once")
        return sorted(scopes)


class ApiClient(BaseModel):
    """An API client as its partner sees it (never its secrets)."""

    client_id: ClientId
    name: str
    scopes: list[Scope]
    state: ClientState
    expires_at: UtcDatetime | None
    created_at: UtcDatetime
    created_by: str
    revoked_at: UtcDatetime | None
    revoked_by: str | None
    last_used_at: UtcDatetime | None = Field(description="When it last got a token (updated at most once a minute)")
    secret_rotated_at: UtcDatetime | None
    previous_secret_expires_at: UtcDatetime | None = Field(
        description="Until when the secret replaced by the last rotation still works; null when none does"
    )
    version: int = Field(description="Moves on with every change (creation, rotation, revocation)")


def client_state(revoked_at: datetime | None, expires_at: datetime | None, now: datetime) -> ClientState:
    if revoked_at is not None:
        return ClientState.REVOKED
    if expires_at is not None and expires_at <= now:
        return ClientState.EXPIRED
    return ClientState.ACTIVE


class CreatedClient(ApiClient):
    client_secret: str = Field(description="Shown this once: only its hash is kept")


class RotatedSecret(ApiClient):
    client_secret: str = Field(
        description="The new secret, shown this once; the previous one works until `previous_secret_expires_at`"
    )


class AuditAction(StrEnum):
    CREATED = "created"
    SECRET_ROTATED = "secret_rotated"
    REVOKED = "revoked"


class AuditEntry(BaseModel):
    id: int
    client_id: ClientId
    action: AuditAction
    actor: str = Field(description="Who did it, as the caller named itself (see docs/identity.md)")
    at: UtcDatetime
    details: dict[str, Any]


class RotateSecret(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_period_s: int | None = Field(
        default=None,
        ge=0,
        le=30 * 24 * 3600,
        description="How long the current secret keeps working beside the new one (default: the service's "
        "setting); 0 ends it at once, e.g. after a leak",
    )


# --- scopes --------------------------------------------------------------------------------------


class InvalidScope(ValueError):
    pass


def requested_scopes(scope: str | None, granted: Iterable[str]) -> list[str]:
    """The scopes a token gets: those requested (RFC 6749 3.3: space-delimited), which must all be granted to
    the client, or all of the client's when none is requested."""
    allowed = sorted(set(granted))
    if scope is None or not scope.strip(" "):
        return allowed
    asked = scope.split(" ")
    if any(not part for part in asked):
        raise InvalidScope("separate scopes with single spaces")
    unknown = sorted(set(asked) - {s.value for s in Scope})
    if unknown:
        raise InvalidScope(f"unknown scopes: {' '.join(unknown)}")
    missing = sorted(set(asked) - set(allowed))
    if missing:
        raise InvalidScope(f"the client does not hold: {' '.join(missing)}")
    return sorted(set(asked))


# --- the token request (RFC 6749 4.4, client authentication 2.3.1) -------------------------------


class OAuthError(Exception):
    """An RFC 6749 5.2 error: `error` is the standard code; invalid_client is a 401 with a challenge."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def invalid_request(description: str) -> OAuthError:
    return OAuthError("invalid_request", description)


def invalid_client(
    description: str = "unknown client, wrong secret, or the client is revoked or expired",
) -> OAuthError:
    return OAuthError("invalid_client", description, 401)


@dataclass(frozen=True)
class TokenRequest:
    client_id: str
    client_secret: str
    scope: str | None
    method: str  # client_secret_basic or client_secret_post
    # Only from the platform's own client (FIRST_PARTY_CLIENT_ID): the partner the token is for, and who acts.
    partner_id: str | None = None
    actor: str | None = None


MAX_CREDENTIAL_LENGTH = 200


# FIRST_PARTY_CLIENT_ID (contracts.identity), authenticated with CONSOLE_CLIENT_SECRET: the console, which serves every
# partner's users, asks for a token of the partner it names, with the scopes that person's role holds.
ACTOR_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]{1,200}$"  # one line of at most 200 characters: a person's name or email

# The token request's parameters (RFC 6749 4.4.2, 2.3.1, and the first-party client's two): the others are ignored.
TOKEN_PARAMETERS = frozenset({"grant_type", "scope", "client_id", "client_secret", "partner_id", "actor"})


def parse_form(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """RFC 6749 3.1: a parameter sent twice is an invalid request, and unrecognized parameters are ignored (they
    answered 400 when sent twice)."""
    form: dict[str, str] = {}
    for name, value in pairs:
        if name not in TOKEN_PARAMETERS:
            continue
        if name in form:
            raise invalid_request(f"'{name}' is given more than once")
        form[name] = value
    return form


def token_request(form: Mapping[str, str], authorization: str | None) -> TokenRequest:
    """The client credentials grant's request, with the client authenticated by exactly one method: HTTP Basic
    (`client_secret_basic`) or the form's `client_id` and `client_secret` (`client_secret_post`)."""
    grant_type = form.get("grant_type")
    if grant_type is None:
        raise invalid_request("grant_type is missing")
    if grant_type != "client_credentials":
        raise OAuthError("unsupported_grant_type", "only grant_type=client_credentials is supported")
    in_form = "client_secret" in form
    if authorization is not None and authorization[:6].lower() == "basic ":
        if in_form:
            raise invalid_request("authenticate with one method only: HTTP Basic or client_secret in the form")
        client_id, secret = _basic_credentials(authorization[6:])
        if form.get("client_id", client_id) != client_id:
            raise invalid_request("client_id in the form differs from the one in the Authorization header")
        method = "client_secret_basic"
    elif authorization is not None:
        raise invalid_client("authenticate with HTTP Basic or client_secret_post")
    elif in_form:
        if "client_id" not in form:
            raise invalid_request("client_id is missing")
        client_id, secret, method = form["client_id"], form["client_secret"], "client_secret_post"
    else:
        raise invalid_client("no client authentication: use HTTP Basic or client_id and client_secret in the form")
    if not (_plausible(client_id) or client_id == FIRST_PARTY_CLIENT_ID) or not secret:
        raise invalid_client()
    if len(secret) > MAX_CREDENTIAL_LENGTH:
        raise invalid_client()
    partner_id, actor = _on_behalf(client_id, form)
    scope = form.get("scope")
    return TokenRequest(client_id, secret, scope, method, partner_id=partner_id, actor=actor)


def _on_behalf(client_id: str, form: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The first-party client names the partner (required) and who acts (optional); an API client's token is
    always for its own partner, so it may name neither."""
    partner_id, actor = form.get("partner_id"), form.get("actor")
    if client_id != FIRST_PARTY_CLIENT_ID:
        if partner_id is not None or actor is not None:
            raise invalid_request("partner_id and actor are for the platform's own client: a token is for its client")
        return None, None
    if partner_id is None or re.fullmatch(PARTNER_ID_PATTERN, partner_id) is None:
        raise invalid_request("partner_id: name the partner the token is for")
    if actor is not None and re.fullmatch(ACTOR_PATTERN, actor) is None:
        raise invalid_request("actor: one line of at most 200 characters")
    return partner_id, actor


def _basic_credentials(encoded: str) -> tuple[str, str]:
    """RFC 6749 2.3.1: the id and secret are form-urlencoded, then joined by ':' and base64-encoded."""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise invalid_client("the Basic credentials are not base64 of UTF-8 text") from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise invalid_client("the Basic credentials have no ':' between client id and secret")
    return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))


def _plausible(client_id: str) -> bool:
    """Shaped like our client ids, so nothing else reaches a query."""
    return re.fullmatch(CLIENT_ID_PATTERN, client_id) is not None


# --- access tokens (RFC 9068) --------------------------------------------------------------------


def access_token_claims(
    *,
    issuer: str,
    audience: str,
    partner_id: str,
    client_id: str,
    scopes: Sequence[str],
    now: datetime,
    ttl: timedelta,
    client_expires_at: datetime | None,
    jti: str,
    actor: str | None = None,
) -> dict[str, Any]:
    """A token never outlives its client: it ends at the client's expiry when that comes first. `actor`, the person
    the first-party client acts for, goes in RFC 8693's `act` claim."""
    expires = now + ttl
    if client_expires_at is not None:
        expires = min(expires, client_expires_at)
    acting = {"act": {"sub": actor}} if actor is not None else {}
    return acting | {
        "iss": issuer,
        "aud": audience,
        "sub": partner_id,
        "client_id": client_id,
        "scope": " ".join(scopes),
        "iat": int(now.timestamp()),
        "exp": int(expires.timestamp()),
        "jti": jti,
    }


# --- the signing keys' schedule ------------------------------------------------------------------


@dataclass(frozen=True)
class KeyTimes:
    """When a signing key is published and when it signs. A key is published from its creation until
    `published_until` (null: for as long as it signs); it signs from `signs_from` until `signs_until` (null:
    until a newer key takes over)."""

    kid: str
    created_at: datetime
    signs_from: datetime
    signs_until: datetime | None
    published_until: datetime | None


def signing_key_at(keys: Iterable[KeyTimes], moment: datetime) -> KeyTimes | None:
    """The one key that signs at `moment`: of those whose time has come and not passed, the newest."""
    candidates = [k for k in keys if k.signs_from <= moment and (k.signs_until is None or moment < k.signs_until)]
    return max(candidates, key=lambda k: (k.signs_from, k.kid), default=None)


def published_at(keys: Iterable[KeyTimes], moment: datetime) -> list[KeyTimes]:
    """The keys verifiers must know at `moment`: those that will sign (published ahead), sign, or signed tokens
    that may not have expired yet."""
    return sorted(
        (k for k in keys if k.published_until is None or moment < k.published_until),
        key=lambda k: (k.signs_from, k.kid),
    )


@dataclass(frozen=True)
class Rotation:
    """A rotation's plan: the new key signs from `signs_from`; the key signing now (if any) stops then and stays
    published until `retiring_published_until`, when the last token it may have signed has expired."""

    signs_from: datetime
    retiring: str | None
    retiring_published_until: datetime | None


def pending_key(keys: Iterable[KeyTimes], now: datetime) -> KeyTimes | None:
    """A key published ahead that has not started signing yet."""
    return next((k for k in keys if k.signs_from > now and k.signs_until is None), None)


def plan_rotation(keys: Sequence[KeyTimes], now: datetime, publish_ahead: timedelta, outlives: timedelta) -> Rotation:
    """`outlives`: how long after a key stops signing a token it signed may still be presented (the token
    lifetime, plus how stale an instance's view of the keys may be, plus clock leeway)."""
    current = signing_key_at(keys, now)
    signs_from = now + publish_ahead
    if current is None:
        return Rotation(signs_from=now, retiring=None, retiring_published_until=None)
    return Rotation(signs_from=signs_from, retiring=current.kid, retiring_published_until=signs_from + outlives)


def due_for_rotation(keys: Sequence[KeyTimes], now: datetime, rotate_after: timedelta | None) -> bool:
    """Automatic rotation by age: the signing key is older than `rotate_after` and no successor is pending."""
    if rotate_after is None:
        return False
    current = signing_key_at(keys, now)
    if current is None:
        return True
    return pending_key(keys, now) is None and now - current.signs_from >= rotate_after
