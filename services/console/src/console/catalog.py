"""The partner's statuses as the pages show and offer them: read from the registry's API, in display order (by
type, then position, then code), named in the user's language."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from console.backends import Service
from console.web import Page
from contracts.statuses import StatusType

STATUS_TYPES = tuple(str(t) for t in StatusType)

Status = dict[str, Any]  # a status definition as the registry's API answers it


def display_order(status: Status) -> tuple[int, int, str]:
    return STATUS_TYPES.index(status["type"]), status["position"], status["code"]


async def partner_statuses(page: Page, *, include_archived: bool = False) -> list[Status]:
    """Every status of the signed-in user's partner (archived ones too when asked: old orders name them)."""
    items: list[Status] = await page.api.pages(
        Service.REGISTRY, "/v1/statuses", include_archived=str(include_archived).lower()
    )
    return sorted(items, key=display_order)


def choices(page: Page, statuses: Iterable[Status]) -> dict[str, list[tuple[str, str]]]:
    """The statuses one may choose (not archived) by type, in display order, as (code, name)."""
    active = sorted((s for s in statuses if not s["archived"]), key=display_order)
    return {t: [(s["code"], page.fmt.status_name(s)) for s in active if s["type"] == t] for t in STATUS_TYPES}
