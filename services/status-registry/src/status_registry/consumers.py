"""The registry's one input: which status codes the partners' campaigns name (campaigns.status-usage.v1)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from contracts.campaign_events import CampaignStatusUsage
from contracts.envelope import decode
from servicekit.consumer import DeadLetters, Process, Record, decode_batch


def campaign_usage_processor(pool: asyncpg.Pool, dead_letters: DeadLetters) -> Process:
    async def process(records: Sequence[Record]) -> None:
        decoded, rejected = decode_batch(records, lambda record: decode(record.value or b"", CampaignStatusUsage).data)
        await dead_letters.publish(rejected)
        usages = [usage for _, usage in decoded]
        if usages:
            async with pool.acquire() as conn:
                # Newer versions win; a redelivered or compacted-out-of-order record changes nothing.
                await conn.executemany(
                    "INSERT INTO campaign_usage (partner_id, campaign_id, name, active, codes, version) "
                    "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (partner_id, campaign_id) DO UPDATE SET "
                    "name = EXCLUDED.name, active = EXCLUDED.active, codes = EXCLUDED.codes, "
                    "version = EXCLUDED.version "
                    "WHERE campaign_usage.version < EXCLUDED.version",
                    [(u.partner_id, u.campaign_id, u.name, u.active, u.codes, u.version) for u in usages],
                )

    return process
