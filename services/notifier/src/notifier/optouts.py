"""Consent: a partner's opt-out ledger (the API) and STOP replies from handsets (every provider's inbound)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg

from notifier.domain import InvalidPhone, OptOut, is_stop_request, normalized_mobile
from notifier.providers.base import InboundSms
from notifier.repository import DispatchQueue, MessageRepository
from servicekit.errors import NotFound

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptOuts:
    """The consent ledger of one partner."""

    pool: asyncpg.Pool
    partner_id: str

    async def add(self, phone: str, source: str = "api") -> tuple[OptOut, bool]:
        phone = normalized_mobile(phone)
        async with self.pool.acquire() as conn:
            return await MessageRepository(conn, self.partner_id).opt_out(phone, source)

    async def remove(self, phone: str) -> None:
        phone = normalized_mobile(phone)
        async with self.pool.acquire() as conn:
            if not await MessageRepository(conn, self.partner_id).opt_in(phone):
                raise NotFound(f"'{phone}' is not opted out")

    async def list(self, *, after: str | None, limit: int) -> list[OptOut]:
        async with self.pool.acquire() as conn:
            return await MessageRepository(conn, self.partner_id).opt_outs(after=after, limit=limit)


async def handle_inbound(pool: asyncpg.Pool, inbound: InboundSms) -> list[str]:
    """A reply from a handset: STOP / СТОП / ОТПИСКА opts the number out for every partner that messaged it.

    A reply names no partner; the partners whose messages it could be answering are those that sent
    to this number, and a customer who writes STOP means all of them. Returns those partners.
    """
    if not is_stop_request(inbound.text):
        return []
    try:
        phone = normalized_mobile(inbound.phone if inbound.phone.startswith("+") else f"+{inbound.phone}")
    except InvalidPhone:
        log.warning("ignoring a STOP from an unreadable number %r", inbound.phone)
        return []
    async with pool.acquire() as conn, conn.transaction():
        partners = await DispatchQueue(conn).partners_messaging(phone)
        for partner in partners:
            await MessageRepository(conn, partner).opt_out(phone, "inbound")
    log.info("inbound STOP from %s: opted out for %s", phone, partners)
    return partners
