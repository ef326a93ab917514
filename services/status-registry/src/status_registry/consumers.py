"""The registry's one input: which status codes the partners' campaigns name (campaigns.status-usage.v1)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from contracts.campaign_events import CampaignStatusUsage
from contracts.envelope import decode
from servicekit.consumer import DeadLetters, Process, Record, decode_batch
from status_registry.repository import record_campaign_usage


def campaign_usage_processor(pool: asyncpg.Pool, dead_letters: DeadLetters) -> Process:
    async def process(records: Sequence[Record]) -> None:
        decoded, rejected = decode_batch(records, lambda record: decode(record.value or b"", CampaignStatusUsage).data)
        await dead_letters.publish(rejected)
        usages = [usage for _, usage in decoded]
        if usages:
            async with pool.acquire() as conn:
                await record_campaign_usage(conn, usages)

    return process
