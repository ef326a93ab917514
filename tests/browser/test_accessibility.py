"""The accessibility check itself (accessibility.py, the autouse `accessibility` fixture) on tiny pages served by the
test under the console's own Content-Security-Policy: it reports what it must, when it must, and axe runs there
without a single CSP complaint."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.async_api import Browser, Page

from console.web import CONTENT_SECURITY_POLICY

from .accessibility import AccessibilityAudit

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<script src="/add-field.js" defer></script></head>
<body><main><h1>{title}</h1>{body}<p><a href="/clean">Next page</a></p></main></body></html>"""
PAGES = {
    "/clean": PAGE.format(title="Clean", body='<label for="name">Name</label> <input id="name">'),
    "/unlabelled": PAGE.format(title="Unlabelled", body="<input>"),
    "/changes": PAGE.format(
        title="Changes",
        body='<button type="button" id="add">Add a field</button>'
        ' <button type="button" id="leave">Add and leave</button>',
    ),
}
# On a click, an input with no label appears: no htmx swap, no load, only the DOM changing; "Add and leave" leaves
# the page in the same moment, so the change is checked only if the navigation waits for it.
ADD_FIELD = """document.addEventListener('click', (event) => {
  if (event.target.type === 'button') document.querySelector('main').append(document.createElement('input'));
  if (event.target.id === 'leave') location.href = '/clean';
});"""


class TinySite(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path not in PAGES and self.path != "/add-field.js":
            self.send_error(404)
        elif self.path == "/add-field.js":
            self._send("text/javascript", ADD_FIELD)
        else:
            self._send("text/html; charset=utf-8", PAGES[self.path])

    def _send(self, content_type: str, body: str) -> None:
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-security-policy", CONTENT_SECURITY_POLICY)  # the console's own
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: object) -> None:  # the test's requests need no log
        pass


@pytest.fixture
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), TinySite)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def _page(browser: Browser, site: str, csp_complaints: list[str]) -> Page:
    context = await browser.new_context(base_url=site)
    page = await context.new_page()
    page.on("console", lambda message: csp_complaints.append(message.text) if "Security" in message.text else None)
    return page


def _rules(audit: AccessibilityAudit) -> list[tuple[str, str, str]]:
    return [(violation.rule, violation.target, violation.url.rsplit("/", 1)[-1]) for violation in audit.violations]


async def test_an_unlabelled_input_on_a_loaded_page_is_reported(
    browser: Browser, site: str, accessibility: AccessibilityAudit
) -> None:
    complaints: list[str] = []
    page = await _page(browser, site, complaints)
    await page.goto("/unlabelled")
    await accessibility.settle()

    assert ("label", "input", "unlabelled") in _rules(accessibility), accessibility.report()
    assert [violation.impact for violation in accessibility.violations] == ["critical"]
    assert len(accessibility.checked) == 1  # a page that does not change is checked once (axe changes nothing)
    assert "critical label on http://127.0.0.1:" in accessibility.report()
    assert not complaints  # axe ran under the console's CSP without breaking it
    accessibility.violations.clear()  # seen: this test's teardown must not fail on them


async def test_a_change_made_before_the_page_is_left_is_checked_and_a_clean_page_passes(
    browser: Browser, site: str, accessibility: AccessibilityAudit
) -> None:
    complaints: list[str] = []
    page = await _page(browser, site, complaints)
    await page.goto("/changes")
    await page.get_by_role("button", name="Add and leave").click()  # the route holds it until /changes is checked
    await page.wait_for_url("**/clean")
    await accessibility.settle()

    assert _rules(accessibility) == [("label", "input", "changes")], accessibility.report()
    assert "/clean" in " ".join(accessibility.checked)  # checked, and clean
    assert not complaints
    accessibility.violations.clear()


async def test_the_last_page_is_checked_when_the_test_ends(
    browser: Browser, site: str, accessibility: AccessibilityAudit
) -> None:
    page = await _page(browser, site, [])
    await page.goto("/changes")
    await accessibility.settle()
    assert accessibility.violations == []
    await page.get_by_role("button", name="Add a field").click()  # no load, no swap, no navigation after it

    await page.context.close()  # what the fixtures do at teardown

    assert _rules(accessibility) == [("label", "input", "changes")], accessibility.report()
    accessibility.violations.clear()
