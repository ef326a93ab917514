"""Order statuses: the three status dimensions and a partner's status definitions.

A partner defines its own statuses; a status `code` is unique per partner across all three types (it is the
key of the compacted `registry.status-definitions.v1` topic), so a code alone tells which type it belongs to.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from contracts.base import ContractModel
from contracts.primitives import DisplayName, LanguageTag, PartnerId, Slug, UtcDatetime


class StatusType(StrEnum):
    """The three independent status dimensions of an order."""

    GENERAL = "general"
    DELIVERY = "delivery"
    PAYMENT = "payment"


class StatusRef(ContractModel):
    """A status as events mention it: its code and its name at the time of the event."""

    code: Slug
    name: DisplayName


class StatusDefinition(ContractModel):
    """One status a partner defined, as the status registry publishes it (the full current state)."""

    partner_id: PartnerId
    code: Slug
    name: DisplayName
    localized_names: dict[LanguageTag, DisplayName] = Field(
        default_factory=dict, description="Names in other languages, by BCP 47 language tag."
    )
    description: Annotated[str, StringConstraints(max_length=1000)] | None = None
    type: StatusType
    include_in_analytics: bool = Field(description="Only flagged statuses appear in reports and segments.")
    position: int = Field(default=0, ge=0, description="Display order within its type.")
    is_initial: bool = False
    allowed_next: list[Slug] | None = Field(
        default=None, description="Codes this status may move to: null = any, [] = final status."
    )
    archived: bool = False
    version: int = Field(ge=1, description="Incremented on every change; readers keep the highest.")
    created_at: UtcDatetime
    updated_at: UtcDatetime

    def ref(self) -> StatusRef:
        return StatusRef(code=self.code, name=self.name)

    def allows_transition_to(self, code: str) -> bool:
        """Whether an order in this status may move to `code` (`allowed_next` None means any)."""
        return self.allowed_next is None or code in self.allowed_next


class StatusCodes(ContractModel):
    """A status code per type; a type left out (null) is not being set."""

    general: Slug | None = None
    delivery: Slug | None = None
    payment: Slug | None = None

    def of(self, status_type: StatusType) -> str | None:
        code: str | None = getattr(self, status_type.value)
        return code

    def items(self) -> Iterator[tuple[StatusType, str]]:
        """The (type, code) pairs that are set, in `StatusType` order."""
        for status_type in StatusType:
            code = self.of(status_type)
            if code is not None:
                yield status_type, code


class CurrentStatuses(ContractModel):
    """An order's current status per type (null: the order has no status of that type yet)."""

    general: StatusRef | None = None
    delivery: StatusRef | None = None
    payment: StatusRef | None = None

    def of(self, status_type: StatusType) -> StatusRef | None:
        ref: StatusRef | None = getattr(self, status_type.value)
        return ref
