"""Events of the status registry on the compacted `registry.status-definitions.v1` topic.

Both events carry the full definition and share the key ``{partner_id}:{code}``, so after compaction the
latest record per status is the complete current state; a reader keeps the highest `version` it has seen.
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from contracts.base import Contract
from contracts.statuses import StatusDefinition
from contracts.topics import Topic, status_definition_key


class _StatusDefinitionEvent(Contract):
    TOPIC = Topic.STATUS_DEFINITIONS

    definition: StatusDefinition

    def record_key(self, partner_id: str) -> bytes:
        return status_definition_key(self.definition.partner_id, self.definition.code)

    def event_subject(self) -> str | None:
        return self.definition.code

    def owner_partner_id(self) -> str | None:
        return self.definition.partner_id


class StatusDefinitionUpserted(_StatusDefinitionEvent):
    """A status was created or changed (name, flags, transitions...); `definition` is its new full state."""

    EVENT_TYPE = "status-definition.upserted.v1"


class StatusDefinitionArchived(_StatusDefinitionEvent):
    """A status was archived: kept for history, no longer accepted for new status changes."""

    EVENT_TYPE = "status-definition.archived.v1"

    version: int = Field(ge=1, description="The definition's version after archiving (= definition.version).")

    @model_validator(mode="after")
    def _check_archived(self) -> Self:
        if not self.definition.archived:
            raise ValueError("an archived definition must have archived=true")
        if self.version != self.definition.version:
            raise ValueError(f"version {self.version} differs from definition.version {self.definition.version}")
        return self
