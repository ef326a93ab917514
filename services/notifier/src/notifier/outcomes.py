"""Recording what the provider calls came to, after the call (the attempt itself was committed before it).

Accepted: the message is dispatched, its parts (provider ids) are kept and receipts that came early are merged.
Failed: the retry policy reschedules it or gives up (SmsFailed, and the command on the dead-letter topic).
An outcome whose attempt reconciliation settled meanwhile is ignored. The outcomes of sends finishing together
are recorded in one transaction (`servicekit.batching.GroupCommit` in the dispatcher).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from contracts.sms import SmsFailureReason
from notifier.domain import GiveUp, MessageStatus, RetryPolicy
from notifier.events import Events
from notifier.providers.base import Accepted, Provider, ProviderFailure
from notifier.receipts import settle_receipts
from notifier.repository import Claimed, Dispatched, DispatchQueue, FinishedAttempt
from servicekit.outbox import OutboxRecord, UnitOfWork, unit_of_work

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendOutcome:
    """What one provider call came to: accepted (with the provider's ids) or a failure."""

    claimed: Claimed
    attempt: int
    accepted: Accepted | None = None
    failure: ProviderFailure | None = None
    how: str = "accepted"  # or "reconciled": found at the provider after a crash

    @property
    def message_id(self) -> str:
        return self.claimed.message.message_id

    @property
    def what(self) -> tuple[str, int]:
        return self.message_id, self.attempt


# Worth trying again: the database was away, or two transactions met in a deadlock (PostgreSQL undid one).
RECORDING_RETRIED = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.DeadlockDetectedError,
)


def still_sending(current: Claimed | None, attempt: int) -> bool:
    """Whether `attempt` is still the open attempt: reconciliation may have settled it meanwhile."""
    return (
        current is not None and current.message.status is MessageStatus.SENDING and current.message.attempts == attempt
    )


def final_status(reason: SmsFailureReason) -> MessageStatus:
    """The status of a message given up on: expired or failed."""
    return MessageStatus.EXPIRED if reason is SmsFailureReason.EXPIRED else MessageStatus.FAILED


@dataclass(frozen=True)
class OutcomeRecorder:
    """Records groups of send outcomes, each group in one transaction with the events it causes."""

    pool: asyncpg.Pool
    provider: Provider
    events: Events
    policy: RetryPolicy

    async def record(self, outcomes: Sequence[SendOutcome]) -> None:
        """Record a group of outcomes, riding out a short database outage (one retry loop per group)."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(RECORDING_RETRIED),
            wait=wait_random_exponential(multiplier=0.2, max=5),
            stop=stop_after_attempt(6),
            reraise=True,
        ):
            with attempt:
                await self._record_group(outcomes)

    async def _record_group(self, outcomes: Sequence[SendOutcome]) -> None:
        try:
            async with unit_of_work(self.pool) as work:
                await self._record_in(work, outcomes)
        except asyncpg.PostgresError as exc:
            if len(outcomes) == 1 or isinstance(exc, RECORDING_RETRIED):
                raise
            # One outcome the database refuses must not hold back the others: each on its own, once.
            log.warning("recording %d outcomes failed (%s); recording them one by one", len(outcomes), exc)
            for outcome in outcomes:
                try:
                    async with unit_of_work(self.pool) as work:
                        await self._record_in(work, [outcome])
                except asyncpg.PostgresError:
                    log.exception("could not record the outcome of %s; reconciliation will", outcome.message_id)

    async def _record_in(self, work: UnitOfWork, outcomes: Sequence[SendOutcome]) -> None:
        queue = DispatchQueue(work.conn)
        current = await queue.lock([o.message_id for o in outcomes])
        live = []
        for outcome in outcomes:
            if still_sending(current.get(outcome.message_id), outcome.attempt):
                live.append(outcome)
            else:
                log.warning("outcome of %s attempt %d arrived after reconciliation; ignored", *outcome.what)
        accepted = [(o, o.accepted) for o in live if o.accepted is not None]
        outbox = await self._accepted(queue, accepted) if accepted else []
        for outcome in live:
            if outcome.failure is not None:
                outbox += await self._failed(queue, outcome.claimed, outcome.attempt, outcome.failure)
        work.add(outbox)

    async def _accepted(self, queue: DispatchQueue, accepted: list[tuple[SendOutcome, Accepted]]) -> list[OutboxRecord]:
        provider = self.provider.name
        await queue.lock_provider_ids(provider, (pid for _, a in accepted for pid in a.provider_message_ids))
        receipts = await queue.dispatch(
            provider,
            [Dispatched(o.message_id, o.attempt, o.how, a.provider_message_ids, a.per_segment) for o, a in accepted],
        )
        outbox = [
            self.events.dispatched(o.claimed.message, o.claimed.correlation_id, provider, a.provider_message_ids[0])
            for o, a in accepted
        ]
        # Receipts may have come before this commit (fast handsets, slow databases): merge them now.
        dispatched = [(o.claimed, a.provider_message_ids[0]) for o, a in accepted]
        return outbox + await settle_receipts(queue, self.events, provider, dispatched, receipts)

    async def _failed(
        self, queue: DispatchQueue, claimed: Claimed, attempt: int, failure: ProviderFailure
    ) -> list[OutboxRecord]:
        message = claimed.message
        await queue.finish_attempts([FinishedAttempt(message.message_id, attempt, "failed", failure.detail[:2000])])
        decision = self.policy.decide(
            attempt=attempt - claimed.attempts_before_round,  # a replay's round has a retry budget of its own
            kind=failure.kind,
            detail=failure.detail,
            retry_after_s=failure.retry_after_s,
            now=datetime.now(UTC),
            expires_at=message.expires_at,
        )
        if isinstance(decision, GiveUp):
            return await self.give_up(queue, claimed, attempt, decision.reason, decision.detail)
        log.info("retrying %s at %s: %s", message.message_id, decision.at.isoformat(), failure.detail)
        await queue.reschedule(message.message_id, decision.at)
        return []

    async def give_up(
        self, queue: DispatchQueue, claimed: Claimed, attempts: int, reason: SmsFailureReason, detail: str
    ) -> list[OutboxRecord]:
        message = claimed.message
        await queue.end([(message.message_id, final_status(reason), str(reason), detail[:2000])])
        return [
            self.events.failed(
                message, claimed.correlation_id, reason, detail, provider=self.provider.name, attempts=attempts
            ),
            self.events.dead_letter(claimed, str(reason), detail),
        ]
