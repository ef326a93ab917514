"""Identity: the scopes an API client may hold, and the revocations every service follows.

A revoked API client is final (it is never reinstated), so the compacted topic
``identity.client-revocations.v1`` with key ``{partner_id}:{client_id}`` holds one record per revoked client
for good: a service that reads it from the beginning knows every revoked client, and refuses its tokens at
once instead of when they expire (servicekit.jwks.RevokedClients).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from contracts.base import Contract
from contracts.primitives import PartnerId, UtcDatetime
from contracts.topics import Topic, client_revocation_key

CLIENT_ID_PATTERN = r"^cli_[A-Za-z0-9]{20,40}$"
ClientId = Annotated[str, StringConstraints(pattern=CLIENT_ID_PATTERN)]
"""An API client's public id (`client_id` in OAuth2), issued by the identity service."""


FIRST_PARTY_CLIENT_ID = "console"
"""The platform's own client, configured rather than created: the console (and `make token`) asks identity for a
token of the partner it names, for the person it names (docs/identity.md, "The console's tokens")."""


class Scope(StrEnum):
    """What an access token may do: one resource and one action each, enforced by the service that owns it."""

    STATUSES_READ = "statuses:read"
    STATUSES_WRITE = "statuses:write"
    ORDERS_READ = "orders:read"
    ORDERS_WRITE = "orders:write"
    CAMPAIGNS_READ = "campaigns:read"
    CAMPAIGNS_WRITE = "campaigns:write"
    MESSAGES_READ = "messages:read"
    MESSAGES_WRITE = "messages:write"
    WEBHOOKS_MANAGE = "webhooks:manage"
    CLIENTS_MANAGE = "clients:manage"


class ApiClientRevoked(Contract):
    """An API client was revoked: its secrets no longer get tokens, and its tokens are refused from now on."""

    EVENT_TYPE = "api-client.revoked.v1"
    TOPIC = Topic.CLIENT_REVOCATIONS

    partner_id: PartnerId
    client_id: ClientId
    revoked_at: UtcDatetime = Field(description="When the revocation committed; tokens are refused from then on.")

    def record_key(self, partner_id: str) -> bytes:
        return client_revocation_key(self.partner_id, self.client_id)

    def event_subject(self) -> str | None:
        return self.client_id

    def owner_partner_id(self) -> str | None:
        return self.partner_id
