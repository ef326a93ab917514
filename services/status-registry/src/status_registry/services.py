"""Use cases of the registry: each runs in one transaction that also writes its events to the outbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from contracts.envelope import Envelope
from contracts.status_events import StatusDefinitionArchived, StatusDefinitionUpserted
from contracts.statuses import StatusDefinition, StatusType
from contracts.topics import status_definition_key
from servicekit.errors import Conflict, FieldError, NotFound, PreconditionFailed
from servicekit.outbox import OutboxRelay, UnitOfWork, unit_of_work
from status_registry.domain import (
    NewStatus,
    OrderMismatch,
    RuleViolation,
    StatusFields,
    StatusPatch,
    SyncPlan,
    check_allowed_next,
    patched,
    plan_sync,
    reordered,
)
from status_registry.repository import StatusRepository

SOURCE = "/services/status-registry"


@dataclass(frozen=True)
class Registry:
    """The registry's use cases for one partner.

    A write answers once its events are on the topic (or `publish_wait_s` passed): the caller may name a
    new status in its very next request to another service, whose replica then finds it (see
    `StatusCatalog.sync`)."""

    pool: asyncpg.Pool
    partner_id: str
    topic: str  # the physical name of the status-definitions topic (with any environment prefix)
    outbox: OutboxRelay
    publish_wait_s: float

    @asynccontextmanager
    async def _unit_of_work(self) -> AsyncIterator[tuple[StatusRepository, UnitOfWork]]:
        """A change and its events, with the partner's catalog held until commit (`lock_catalog`); the answer waits
        until the broker has them (on timeout the change stands and is published later)."""
        async with unit_of_work(self.pool, relay=self.outbox, publish_wait_s=self.publish_wait_s) as work:
            repo = StatusRepository(work.conn, self.partner_id)
            await repo.lock_catalog()
            yield repo, work

    def _publish(self, work: UnitOfWork, definition: StatusDefinition) -> None:
        data = (
            StatusDefinitionArchived(definition=definition, version=definition.version)
            if definition.archived
            else StatusDefinitionUpserted(definition=definition)
        )
        envelope = Envelope.wrap(data, source=SOURCE, partner_id=self.partner_id, subject=definition.code)
        work.publish(envelope, self.topic, status_definition_key(self.partner_id, definition.code))

    async def get(self, code: str) -> StatusDefinition:
        async with self.pool.acquire() as conn:
            found = await StatusRepository(conn, self.partner_id).get(code)
        if found is None:
            raise NotFound(f"no status with code '{code}'")
        return found

    async def create(self, new: NewStatus) -> StatusDefinition:
        async with self._unit_of_work() as (repo, work):
            existing = await repo.get(new.code)
            if existing is not None:
                message = f"a {existing.type} status with code '{new.code}' exists already ('{existing.name}')"
                raise Conflict(message, code="status_exists", errors=[_field_conflict("code", message)])
            await self._check_references(repo, new.code, new.type, new)
            created = await repo.insert(new)
            self._publish(work, created)
        return created

    async def update(self, code: str, patch: StatusPatch, if_match: int | None) -> StatusDefinition:
        """Change a status; `if_match` None (`If-Match: *`) applies to whatever version is current, in the same lock."""
        async with self._unit_of_work() as (repo, work):
            current = await self._current(repo, code, if_match)
            fields = patched(current, patch)
            if fields == StatusFields.model_validate(current.model_dump(include=set(StatusFields.model_fields))):
                return current
            await self._check_references(repo, code, current.type, fields)
            updated = await repo.update(code, fields, archived=current.archived)
            self._publish(work, updated)
        return updated

    async def set_archived(self, code: str, archived: bool, if_match: int | None = None) -> StatusDefinition:
        """Archive or restore; repeating either is a no-op that publishes nothing."""
        async with self._unit_of_work() as (repo, work):
            current = await self._current(repo, code, if_match)
            if current.archived == archived:
                return current
            if not archived and current.is_initial:
                await self._check_single_initial(repo, code, current.type)
            if archived:
                await self._check_unused(repo, code)
            changed = await repo.set_archived(code, archived)
            self._publish(work, changed)
        return changed

    async def sync(self, desired: list[NewStatus]) -> tuple[SyncPlan, list[StatusDefinition]]:
        """Make the partner's catalog equal `desired`; the same body twice changes nothing the second time."""
        async with self._unit_of_work() as (repo, work):
            plan = plan_sync(await repo.all(for_update=True), desired)
            for archived in plan.archive:
                await self._check_unused(repo, archived.code)
            # Archive and demote first so a new initial status never collides with the one it replaces.
            changed = [await repo.set_archived(d.code, True) for d in plan.archive]
            for current, fields in sorted(plan.update + plan.restore, key=lambda pair: pair[1].is_initial):
                changed.append(await repo.update(current.code, fields, archived=False))
            changed += [await repo.insert(new) for new in plan.create]
            for definition in changed:
                self._publish(work, definition)
            result = await repo.all()
        return plan, [d for d in result if not d.archived]

    async def reorder(self, status_type: StatusType, codes: list[str]) -> list[StatusDefinition]:
        """Put the type's statuses in the order of `codes` (positions 10, 20, 30...), all in one transaction: a
        concurrent add or archive refuses the whole order (409 `status_list_changed`) rather than half-apply it.
        Each status that moves is a new version and an event; the same order twice changes nothing."""
        async with self._unit_of_work() as (repo, work):
            current = [d for d in await repo.all(for_update=True) if d.type == status_type and not d.archived]
            try:
                moves = reordered(current, codes)
            except OrderMismatch as mismatch:
                message = f"{status_type} statuses changed meanwhile; {mismatch}"
                raise Conflict(
                    message, code="status_list_changed", errors=[_field_conflict("codes", message)]
                ) from None
            for definition, fields in moves:
                self._publish(work, await repo.update(definition.code, fields, archived=False))
            result = await repo.all()
        return [d for d in result if d.type == status_type and not d.archived]

    async def _current(self, repo: StatusRepository, code: str, if_match: int | None) -> StatusDefinition:
        current = await repo.get(code, for_update=True)
        if current is None:
            raise NotFound(f"no status with code '{code}'")
        if if_match is not None and current.version != if_match:
            raise PreconditionFailed(
                f"'{code}' is at version {current.version}, not {if_match}", code="version_mismatch"
            )
        return current

    async def _check_references(
        self, repo: StatusRepository, code: str, status_type: StatusType, fields: StatusFields
    ) -> None:
        check_allowed_next(code, status_type, fields, await repo.types_by_code() | {code: status_type})
        if fields.is_initial:
            await self._check_single_initial(repo, code, status_type)

    @staticmethod
    async def _check_unused(repo: StatusRepository, code: str) -> None:
        campaigns = await repo.active_campaigns_naming(code)
        if campaigns:
            named = ", ".join(f"'{c['name']}' ({c['id']})" for c in campaigns)
            raise Conflict(
                f"'{code}' is used by the active campaign {named}; pause it or change it first",
                code="status_in_use",
                campaigns=campaigns,
            )

    @staticmethod
    async def _check_single_initial(repo: StatusRepository, code: str, status_type: StatusType) -> None:
        initial = await repo.initial_of(status_type)
        if initial is not None and initial != code:
            message = f"'{initial}' is already the initial {status_type} status; unset it first"
            raise Conflict(message, code="initial_status_taken", errors=[_field_conflict("is_initial", message)])


def _field_conflict(field: str, message: str) -> FieldError:
    """A 409 names the field it concerns too, so a form can show the refusal beside it."""
    return FieldError(location="body", field=field, message=message, type="conflict")


__all__ = ["Registry", "RuleViolation"]
