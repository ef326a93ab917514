"""The console in a real browser: the four services and the console as processes on real Kafka and PostgreSQL,
Debian's Chromium driven by Playwright (`devtools.browser`; Playwright never downloads a browser)."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Locator, Page, async_playwright, expect

from console.cli import create_user
from console.domain import Role
from console.settings import ConsoleSettings
from devtools.browser import LAUNCH_ARGS, ensure_chromium
from devtools.platform import CONSOLE, SERVICES, Platform, database_dsn
from devtools.pytest_plugin import Infrastructure

from .accessibility import AccessibilityAudit

# Where the screenshots go: .state/ by default (a test run changes no tracked file); `make console-screenshots`
# writes them into docs/console/.
SCREENSHOTS = Path(
    os.environ.get("CONSOLE_SCREENSHOTS", Path(__file__).resolve().parents[2] / ".state" / "console-screenshots")
)
PASSWORD = "correct-horse-battery-staple"
WAIT_MS = 60_000  # the pipeline (orders -> campaigns -> notifier) on a busy machine


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    executable = ensure_chromium()  # fails loudly (never skips) when Chromium is missing and cannot be installed
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(executable), args=list(LAUNCH_ARGS))
        yield browser
        await browser.close()


@pytest.fixture(autouse=True)
async def accessibility(browser: Browser, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AccessibilityAudit]:
    """axe-core on every page of every browser context this test opens (accessibility.py says when); the test fails
    at teardown with each serious or critical WCAG 2 A/AA violation: its rule, impact, element and page."""
    audit = AccessibilityAudit()
    new_context = browser.new_context

    async def watched_new_context(**options: Any) -> BrowserContext:
        context = await new_context(**options)
        await audit.watch(context)
        return context

    monkeypatch.setattr(browser, "new_context", watched_new_context)
    yield audit
    await audit.close_all()
    print(f"accessibility: {len(audit.checked)} checks, {len(set(audit.checked))} URLs; left unstyled: {audit.skipped}")
    assert not audit.violations and not audit.errors, f"accessibility (axe-core, WCAG 2 A/AA):\n{audit.report()}"


@dataclass
class Console:
    platform: Platform

    @property
    def url(self) -> str:
        return self.platform.url(CONSOLE)

    @staticmethod
    async def platform_sleep(seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def user(self, email: str, role: Role, partner: str | None, *, language: str = "en") -> str:
        """A console user with a known password (no change required); returns the email."""
        settings = ConsoleSettings(
            database_url=database_dsn(self.platform.infrastructure.postgres_dsn, self.platform.database(CONSOLE))
        )
        await create_user(settings, email, role, partner, password=PASSWORD, language=language)
        return email


@pytest.fixture
async def console(infrastructure: Infrastructure, tmp_path: Path) -> AsyncIterator[Console]:
    """The four services and the console running as processes; stopped and cleaned up after the test."""
    platform = Platform(infrastructure, tmp_path, preloaded=True)
    await platform.create()
    try:
        for service in (*SERVICES, CONSOLE):
            platform.start(service)
        await platform.wait_ready(*SERVICES, CONSOLE)
        yield Console(platform)
    finally:
        platform.stop_all()
        await platform.drop()


SignIn = Callable[[str], Awaitable[Page]]


@pytest.fixture
async def sign_in(browser: Browser, console: Console) -> AsyncIterator[SignIn]:
    """Opens a fresh browser context (its own cookies) and signs `email` in; returns the page. Whatever the console's
    Content-Security-Policy blocked on any of these pages (an inline script or style, an eval) fails the test."""
    contexts: list[BrowserContext] = []
    blocked: list[str] = []

    async def open_as(email: str) -> Page:
        context = await browser.new_context(base_url=console.url, viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = await context.new_page()
        page.on(
            "console",
            lambda message: (
                blocked.append(f"{page.url}: {message.text}") if "Content Security Policy" in message.text else None
            ),
        )
        await page.goto("/login")
        await page.get_by_label("Email").fill(email)
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page).not_to_have_url(re.compile(r"/login"))
        # The URL changes when the landing page's response commits, before its deferred scripts (htmx) run: a
        # click on an hx-get button in that window does nothing, and the test then waits for a dialog forever.
        await page.wait_for_load_state("load")
        return page

    yield open_as
    for context in contexts:
        await context.close()
    assert not blocked, f"the Content-Security-Policy blocked: {blocked}"


async def screenshot(page: Page, name: str) -> None:
    """A screenshot of the current screen for docs/console/ (the README shows one)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before a screenshot
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def timed_goto(page: Page, url: str, timings: dict[str, float]) -> None:
    """Open `url` and record how long the page took to load (reported by the test, never asserted)."""
    started = time.perf_counter()
    await page.goto(url)
    await page.wait_for_load_state("load")
    timings[url] = (time.perf_counter() - started) * 1000


async def reload_until_visible(page: Page, target: Locator, what: str) -> None:
    """The pipeline is asynchronous: reload the page until `target` shows (a reload every second). Returns once the
    page has loaded: a page a form post navigated to can show `target` before its scripts (htmx) run."""
    for _ in range(WAIT_MS // 1000):
        if await target.count():
            await page.wait_for_load_state("load")
            return
        await page.wait_for_timeout(1000)
        await page.reload()
    raise AssertionError(f"{what} never showed on {page.url}")
