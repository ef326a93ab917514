"""Which status codes a partner's campaigns name, published by the campaigns service.

The registry keeps a replica so it can refuse to archive a status an active campaign still uses. The
topic is compacted with key ``{partner_id}:{campaign_id}``: the latest record per campaign is its
current usage; readers keep the highest `version`.
"""

from __future__ import annotations

from pydantic import Field

from contracts.base import Contract
from contracts.primitives import DisplayName, Identifier, PartnerId, Slug
from contracts.topics import Topic, campaign_key


class CampaignStatusUsage(Contract):
    """A campaign was created or changed: its name, whether it is active, and every status code it names."""

    EVENT_TYPE = "campaign.status-usage.v1"
    TOPIC = Topic.CAMPAIGN_STATUS_USAGE

    campaign_id: Identifier
    partner_id: PartnerId
    name: DisplayName
    active: bool
    codes: list[Slug] = Field(description="Codes named by the trigger (from, to) and the filters, sorted.")
    version: int = Field(ge=1, description="The campaign's version; readers keep the highest.")

    def record_key(self, partner_id: str) -> bytes:
        return campaign_key(self.partner_id, self.campaign_id)

    def event_subject(self) -> str | None:
        return self.campaign_id

    def owner_partner_id(self) -> str | None:
        return self.partner_id
