"""axe-core (vendor/, see VENDORED.md) on every page the browser tests load: the WCAG 2.0, 2.1 and 2.2 A and AA
rules, and every serious or critical violation fails the test at its teardown.

conftest.py's autouse `accessibility` fixture has every browser context the test opens watched (`browser.new_context`
is wrapped), so no test has to remember it. Each document checks itself: an init script runs axe once the document
is parsed and styled, once it has loaded, and again whenever its DOM has changed (an htmx swap, a dialog opening, an
error shown) and stayed so for 50 ms, and reports each result through a binding. Nothing is lost to the next page:
a main-frame navigation (a link, a form, a redirect, goto, reload) waits in the route until the document it leaves
has reported a check of its current state, and a page or context closes (the fixtures' teardown) only once its last
state is checked.

Everything reaches the page through the devtools protocol (init scripts and a binding), which the console's
Content-Security-Policy does not govern: the console serves no script for it, and the CSP check of the `sign_in`
fixture stays as strict as it was. (The page is never evaluated while a navigation waits in the route: Chromium
holds devtools commands until the navigation commits, while the page's own scripts and bindings go on.)
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.async_api import BrowserContext, Page, Route

AXE = Path(__file__).resolve().parent / "vendor" / "axe-core-4.14.1" / "axe.min.js"
WCAG_2_A_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa"]
FAILING_IMPACTS = ["serious", "critical"]
AXE_OPTIONS = {"runOnly": {"type": "tag", "values": WCAG_2_A_AA}, "resultTypes": ["violations"]}
CHECK_TIMEOUT_S = 25  # a check takes 0.1-2 s on a busy machine; this keeps a broken page from hanging a test

# Runs in every document, after axe.min.js and before the page's own scripts.
WATCH_SCRIPT = r"""
(() => {
  if (window !== window.top || !location.protocol.startsWith('http')) return;
  const options = OPTIONS, impacts = IMPACTS;
  let changes = 1, checkedAt = 0, running = false, timer = null, clean = false;
  const report = (message) => window.__a11yReport(Object.assign({url: location.href}, message));
  const schedule = () => { clearTimeout(timer); timer = setTimeout(check, 50); };
  // parsed and styled (a page left before its load event is checked as it was shown)
  const ready = () => document.readyState !== 'loading'
    && [...document.querySelectorAll('link[rel=stylesheet]')].every((link) => link.sheet);
  async function check() {
    if (running || changes === checkedAt || !ready()) return;
    running = true;
    const at = changes;
    let found = [], error = null;
    try {
      const result = await axe.run(document, options);
      found = result.violations.flatMap((rule) => rule.nodes
        .filter((node) => impacts.includes(node.impact))
        .map((node) => ({rule: rule.id, impact: node.impact, help: rule.help, target: node.target.join(' '),
                         why: (node.failureSummary || '').replace(/\s+/g, ' ')})));
    } catch (e) {
      error = String(e);
    }
    checkedAt = at;
    running = false;
    clean = changes === checkedAt;
    report({violations: found, error: error, clean: clean});
    if (!clean) schedule();
  }
  const changed = () => {
    changes += 1;
    if (clean) { clean = false; report({dirty: true}); }
    schedule();
  };
  const observer = new MutationObserver(changed);
  observer.observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
  report({dirty: true});
  document.addEventListener('DOMContentLoaded', schedule);
  // Left before it was even parsed and styled (a click on a page still loading on a busy machine): it was never
  // shown as a page, so there is nothing fair to check; said in the summary, never waited for.
  // A change made in the same task as the navigation (a click that adds a field and leaves) reaches the observer
  // only after the navigation has started, and its report could come after the route looked: said here, before.
  window.addEventListener('beforeunload', () => {
    if (observer.takeRecords().length) changed();
    if (!ready()) report({skipped: true, state: document.readyState});
  });
  window.addEventListener('load', schedule);
})();
""".replace("OPTIONS", json.dumps(AXE_OPTIONS)).replace("IMPACTS", json.dumps(FAILING_IMPACTS))


@dataclass(frozen=True)
class Violation:
    url: str
    rule: str
    impact: str
    target: str
    help: str
    why: str  # axe's failure summary: what to change (a contrast ratio, the missing label)

    def __str__(self) -> str:
        return f"{self.impact} {self.rule} on {self.url} at {self.target!r}: {self.help}. {self.why}"


@dataclass
class AccessibilityAudit:
    violations: list[Violation] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)  # the URL of every check
    skipped: list[str] = field(default_factory=list)  # the URL of every page left before it was parsed and styled
    errors: list[str] = field(default_factory=list)
    _checked_now: dict[Page, asyncio.Event] = field(default_factory=dict)  # set: the page's current state is checked
    _open_contexts: list[BrowserContext] = field(default_factory=list)

    async def watch(self, context: BrowserContext) -> None:
        """Every page of `context`, from now on, is checked as the module's docstring says."""
        self._open_contexts.append(context)
        context.on("close", self._forget_context)
        context.on("page", self._watch_page)
        await context.expose_binding("__a11yReport", self._on_report)
        await context.add_init_script(path=AXE)
        await context.add_init_script(WATCH_SCRIPT)
        await context.route("**/*", self._check_before_leaving)
        close = context.close

        async def check_then_close(*, reason: str | None = None) -> None:
            await self.settle(context.pages)
            await close(reason=reason)

        context.close = check_then_close  # type: ignore[method-assign]  # the last pages are checked first

    async def settle(self, pages: list[Page] | None = None) -> None:
        """Waits until each page (every watched one by default) has checked its current state."""
        for page in list(self._checked_now) if pages is None else pages:
            await self._wait_checked(page, "the test ended")

    async def close_all(self) -> None:
        """Closes the contexts a test left open, their pages checked first."""
        for context in list(self._open_contexts):
            await context.close()

    def report(self) -> str:
        return "\n".join([str(violation) for violation in self.violations] + self.errors)

    async def _wait_checked(self, page: Page, before: str, *, leaving: bool = False) -> None:
        checked_now = self._checked_now.get(page)
        if checked_now is None or page.is_closed():
            return
        try:
            await asyncio.wait_for(checked_now.wait(), CHECK_TIMEOUT_S)
        except TimeoutError:
            if leaving:  # the state it leaves was seen by its earlier checks; on a loaded machine (load 20+ on two
                # cores) the last one can lag the test's click: listed, like a page left unstyled, not a failure
                self.skipped.append(f"{page.url} (not checked within {CHECK_TIMEOUT_S} s when {before})")
                return
            self.errors.append(f"{page.url}: axe had not checked its last state when {before}")

    def _on_report(self, source: dict[str, Any], message: dict[str, Any]) -> None:
        page: Page = source["page"]
        checked_now = self._checked_now.setdefault(page, asyncio.Event())
        if message.get("dirty"):
            checked_now.clear()
            return
        if message.get("skipped"):
            self.skipped.append(f"{message['url']} ({message['state']})")
            checked_now.set()
            return
        self.checked.append(message["url"])
        if message["error"]:
            self.errors.append(f"axe failed on {message['url']}: {message['error']}")
        for found in message["violations"]:
            violation = Violation(
                message["url"], found["rule"], found["impact"], found["target"], found["help"], found["why"]
            )
            if violation not in self.violations:
                self.violations.append(violation)
        if message["clean"]:
            checked_now.set()

    async def _check_before_leaving(self, route: Route) -> None:
        request = route.request
        if request.is_navigation_request() and request.frame.parent_frame is None:
            await self._wait_checked(request.frame.page, f"it was left for {request.url}", leaving=True)
        await route.fallback()

    def _forget_context(self, context: BrowserContext) -> None:
        self._open_contexts.remove(context)

    def _watch_page(self, page: Page) -> None:
        close = page.close

        async def check_then_close(*, reason: str | None = None, run_before_unload: bool | None = None) -> None:
            await self.settle([page])
            await close(reason=reason, run_before_unload=run_before_unload)

        page.close = check_then_close  # type: ignore[method-assign]  # its last state is checked first
