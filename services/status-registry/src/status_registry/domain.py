"""Status definitions: the rules of a partner's catalog, free of I/O.

A definition's `code` and `type` never change after creation: integrations and order history
refer to them. Everything else may change; each change bumps `version`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from contracts.primitives import DisplayName as Name
from contracts.primitives import LanguageTag, OneLineName
from contracts.primitives import Slug as Code
from contracts.statuses import StatusDefinition, StatusType
from servicekit.errors import FieldError, InvalidRequest

# Only language tags are keys: saying so in the schema (pydantic writes patternProperties alone, which leaves any
# other key allowed) keeps the OpenAPI document as strict as the validation.
LocalizedNames = Annotated[
    dict[LanguageTag, Name], Field(max_length=100, json_schema_extra={"additionalProperties": False})
]
# What a client writes: names of one line (`OneLineName`). What is stored keeps validating as it was written.
NewLocalizedNames = Annotated[
    dict[LanguageTag, OneLineName], Field(max_length=100, json_schema_extra={"additionalProperties": False})
]
MAX_ALLOWED_NEXT = 1000  # as many as a bulk sync may hold statuses

IMMUTABLE_FIELDS = ("code", "type")
POSITION_STEP = 10  # a reorder numbers a type's statuses 10, 20, 30...: room to slot one in by hand


class StatusFields(BaseModel):
    """The fields a partner sets; what a definition is apart from its identity and bookkeeping."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    localized_names: LocalizedNames = Field(default_factory=dict)
    description: Annotated[str, StringConstraints(max_length=1000)] | None = None
    include_in_analytics: bool = False
    position: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    is_initial: bool = False
    allowed_next: list[Code] | None = Field(
        default=None,
        max_length=MAX_ALLOWED_NEXT,
        description="Absent or null: any transition; []: a final status; a list: only those codes",
    )


class NewStatus(StatusFields):
    code: Code
    type: StatusType
    name: OneLineName
    localized_names: NewLocalizedNames = Field(default_factory=dict)


class StatusPatch(BaseModel):
    """A partial update: only the fields present change. `code` and `type` are refused by name."""

    model_config = ConfigDict(extra="forbid")

    name: OneLineName | None = None
    localized_names: NewLocalizedNames | None = None
    description: Annotated[str, StringConstraints(max_length=1000)] | None = None
    include_in_analytics: bool | None = None
    position: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    is_initial: bool | None = None
    allowed_next: list[Code] | None = Field(default=None, max_length=MAX_ALLOWED_NEXT)
    code: Any = None
    type: Any = None


class RuleViolation(InvalidRequest):
    """The request is well-formed but breaks a catalog rule; `field` names where (a 422 naming the field)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__([FieldError(location="body", field=field, message=message, type="rule_violation")])
        self.field = field
        self.message = message


def fields_of(definition: StatusDefinition) -> StatusFields:
    return StatusFields.model_validate(definition.model_dump(include=set(StatusFields.model_fields)))


def patched(current: StatusDefinition, patch: StatusPatch) -> StatusFields:
    """The fields after applying `patch`; raises RuleViolation for an immutable field."""
    for name in IMMUTABLE_FIELDS:
        if name in patch.model_fields_set and patch.model_dump()[name] != getattr(current, name):
            raise RuleViolation(name, f"{name} is immutable after creation; create a new status instead")
    changes = patch.model_dump(include=patch.model_fields_set - set(IMMUTABLE_FIELDS))
    if changes.get("name", "") is None:
        raise RuleViolation("name", "name cannot be null")
    return fields_of(current).model_copy(update=changes)


def check_allowed_next(
    code: str, status_type: StatusType, fields: StatusFields, types: Mapping[str, StatusType]
) -> None:
    """`allowed_next` may name only known codes of the same type (`types`: code -> type of the catalog)."""
    for target in fields.allowed_next or ():
        if target not in types:
            raise RuleViolation("allowed_next", f"unknown status code '{target}'")
        if types[target] != status_type:
            raise RuleViolation(
                "allowed_next",
                f"'{target}' is a {types[target]} status; '{code}' is {status_type}: transitions stay within a type",
            )


@dataclass
class SyncPlan:
    """What a bulk sync does to reach the desired list; empty when the catalog already matches."""

    create: list[NewStatus] = field(default_factory=list)
    update: list[tuple[StatusDefinition, StatusFields]] = field(default_factory=list)
    restore: list[tuple[StatusDefinition, StatusFields]] = field(default_factory=list)
    archive: list[StatusDefinition] = field(default_factory=list)
    unchanged: list[StatusDefinition] = field(default_factory=list)

    @property
    def changes(self) -> int:
        return len(self.create) + len(self.update) + len(self.restore) + len(self.archive)


def validate_desired(desired: list[NewStatus]) -> None:
    """A full list must be coherent on its own: unique codes, one initial per type, known targets."""
    duplicates = [code for code, n in Counter(s.code for s in desired).items() if n > 1]
    if duplicates:
        raise RuleViolation("statuses", f"codes appear more than once: {', '.join(sorted(duplicates))}")
    initials = Counter(s.type for s in desired if s.is_initial)
    several = [str(t) for t, n in initials.items() if n > 1]
    if several:
        raise RuleViolation("statuses", f"more than one initial status of type {', '.join(sorted(several))}")
    types = {s.code: s.type for s in desired}
    for status in desired:
        check_allowed_next(status.code, status.type, status, types)


def plan_sync(current: Iterable[StatusDefinition], desired: list[NewStatus]) -> SyncPlan:
    validate_desired(desired)
    existing = {d.code: d for d in current}
    plan = SyncPlan()
    for wanted in desired:
        have = existing.pop(wanted.code, None)
        fields = StatusFields.model_validate(wanted.model_dump(exclude={"code", "type"}))
        if have is None:
            plan.create.append(wanted)
        elif have.type != wanted.type:
            raise RuleViolation("type", f"'{wanted.code}' is a {have.type} status; type is immutable")
        elif have.archived:
            plan.restore.append((have, fields))
        elif fields_of(have) != fields:
            plan.update.append((have, fields))
        else:
            plan.unchanged.append(have)
    plan.archive.extend(d for d in existing.values() if not d.archived)
    return plan


class OrderMismatch(Exception):
    """A new order that does not name exactly the type's statuses (one was added or archived meanwhile)."""

    def __init__(self, missing: list[str], unknown: list[str]) -> None:
        parts = ([f"it leaves out {', '.join(missing)}"] if missing else []) + (
            [f"{', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not among them"] if unknown else []
        )
        super().__init__(f"the order must name each of the type's current statuses once: {'; '.join(parts)}")
        self.missing = missing
        self.unknown = unknown


def reordered(current: Iterable[StatusDefinition], codes: list[str]) -> list[tuple[StatusDefinition, StatusFields]]:
    """The statuses (of one type, not archived) whose position changes when they are put in the order of `codes`,
    each with its new fields. Raises RuleViolation for a code named twice, OrderMismatch unless `codes` names
    exactly the current statuses."""
    if duplicates := sorted(code for code, n in Counter(codes).items() if n > 1):
        raise RuleViolation("codes", f"codes appear more than once: {', '.join(duplicates)}")
    by_code = {d.code: d for d in current}
    missing, unknown = sorted(set(by_code) - set(codes)), sorted(set(codes) - set(by_code))
    if missing or unknown:
        raise OrderMismatch(missing, unknown)
    moves = []
    for rank, code in enumerate(codes, start=1):
        definition = by_code[code]
        if definition.position != rank * POSITION_STEP:
            moves.append((definition, fields_of(definition).model_copy(update={"position": rank * POSITION_STEP})))
    return moves
