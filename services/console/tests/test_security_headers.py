"""Every answer of the console carries the security headers, and no template holds inline script: the
Content-Security-Policy allows only the console's own script files, so an inline script or an event handler
attribute would stop working (and an injected one would never run)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from console.app import create_app
from console.domain import Role
from console.services import Users
from console.settings import ConsoleSettings
from devtools.pytest_plugin import Infrastructure

TEMPLATES = Path(__file__).resolve().parents[1] / "src" / "console" / "templates"
PASSWORD = "correct-horse-battery-staple"

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)  # a script element without src
HANDLER_ATTRIBUTE = re.compile(r"\son[a-z]+\s*=", re.IGNORECASE)  # onclick=, onsubmit=...
SCRIPT_URL = re.compile(r"javascript:", re.IGNORECASE)
HTMX_SCRIPT = re.compile(r"\bhx-on|\bhx-vals\s*=\s*['\"]\s*js:|\bhx-vars", re.IGNORECASE)  # htmx's own eval


@pytest.fixture
async def console(infrastructure: Infrastructure, database: str) -> AsyncIterator[FastAPI]:
    app = create_app(ConsoleSettings(database_url=database, kafka_bootstrap_servers=infrastructure.kafka_bootstrap))
    async with app.router.lifespan_context(app):
        await Users(app.state.pool).create("marketer@acme.example", Role.MARKETER, "acme", password=PASSWORD)
        yield app


def test_no_template_holds_inline_script() -> None:
    templates = sorted(TEMPLATES.rglob("*.html"))
    assert templates
    found = [
        f"{path.relative_to(TEMPLATES)}: {match.group(0)!r}"
        for path in templates
        for pattern in (INLINE_SCRIPT, HANDLER_ATTRIBUTE, SCRIPT_URL, HTMX_SCRIPT)
        for match in pattern.finditer(path.read_text())
    ]
    assert not found, "move these into static/console.js (a data- attribute and a delegated listener)"


def test_the_patterns_find_what_they_look_for() -> None:
    assert INLINE_SCRIPT.search("<script>alert(1)</script>")
    assert not INLINE_SCRIPT.search('<script src="/static/console.js" defer></script>')
    assert HANDLER_ATTRIBUTE.search('<button onclick="x()">')
    assert not HANDLER_ATTRIBUTE.search("<button data-close-dialog>")
    assert HTMX_SCRIPT.search('<div hx-on:click="x()">')


async def test_every_kind_of_answer_carries_the_security_headers(console: FastAPI) -> None:
    transport = httpx.ASGITransport(app=console)
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
        found = re.search(r'name="csrf_token" value="([^"]+)"', (await client.get("/login")).text)
        assert found
        form = {"email": "marketer@acme.example", "password": PASSWORD, "csrf_token": found.group(1)}
        answers = {
            "the sign-in page": await client.get("/login"),
            "a redirect": await client.get("/"),
            "a refused form": await client.post("/logout", data={"csrf_token": "forged"}),
            "a static file": await client.get("/static/console.css"),
            "a missing file": await client.get("/static/nothing.js"),
            "a probe": await client.get("/healthz"),
            "a sign-in": await client.post("/login", data=form),
            "a signed-in page": await client.get("/account"),
            "an unknown path": await client.get("/no/such/page"),
        }
    for what, answer in answers.items():
        csp = answer.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in csp, what
        assert "script-src 'self';" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0], what
        assert answer.headers.get("x-content-type-options") == "nosniff", what
        assert answer.headers.get("referrer-policy") == "same-origin", what
