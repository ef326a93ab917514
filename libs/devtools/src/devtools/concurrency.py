"""Helpers of the concurrency tests (docs/concurrency.md): many requests at one resource at once, and what they
answered."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable

import httpx


async def at_once(*requests: Awaitable[httpx.Response]) -> list[httpx.Response]:
    """Send the requests concurrently; none may be a server error."""
    responses = list(await asyncio.gather(*requests))
    errors = [(r.status_code, r.text) for r in responses if r.status_code >= 500]
    assert not errors, errors
    return responses


def statuses(responses: list[httpx.Response]) -> Counter[int]:
    """How many answered each status."""
    return Counter(r.status_code for r in responses)


def codes(responses: list[httpx.Response], status_code: int) -> Counter[str]:
    """The problem codes of the answers with `status_code`."""
    return Counter(r.json()["code"] for r in responses if r.status_code == status_code)
