"""The campaign editor's backtest: what the campaign, as typed, would have sent over the last N days.

The browser posts the editor's form here (static/backtest.js) and reads the answer as it comes: the campaigns
service's NDJSON progress lines passed on as they are, then one line holding the result drawn as HTML in the user's
language. Closing the connection (the Cancel button, leaving the page) stops the work: this route's stream is
cancelled, which closes the campaigns service's, which closes the orders service's query.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import httpx
from fastapi import APIRouter
from fastapi.responses import Response, StreamingResponse

from console import explain
from console.backends import BackendProblem, Backends, BackendUnavailable, Service, segment
from console.charts import Bar, bar_chart
from console.pages.campaigns import PREVIEW_NAME, CampaignForm
from console.web import N_, Page, PartnerUser

router = APIRouter(prefix="/campaigns/-/backtest")

MAX_DAYS = 90
STREAM_TIMEOUT = httpx.Timeout(10, read=600)  # progress comes every quarter second; a stalled backtest ends
DAYS_REFUSED = N_("Give a number of days from 1 to 90.")
PRICE_REFUSED = N_("Give the price of one SMS segment as a number, e.g. 2.50, or leave it empty.")
INCOMPLETE = N_("Complete the campaign first (its target status and its text): the backtest replays it as it is.")
JOURNEY = N_(
    "The backtest replays one-step campaigns only: a journey's waits, checks and exits depend on what happened to "
    "each order later, which it cannot replay yet."
)


@router.post("")
async def run_backtest(page: PartnerUser) -> Response:
    submitted = await page.request.form()
    form = CampaignForm.parse(submitted)
    saved = str(submitted.get("saved_campaign", ""))  # a read-only editor: its fields are not sent
    if saved:
        form = CampaignForm.of(await page.api.get(Service.CAMPAIGNS, f"/v1/campaigns/{segment(saved)}"))
    days = _number(submitted.get("backtest_days"), int)
    price_text = str(submitted.get("backtest_price") or "").strip()
    price = _number(price_text, float) if price_text else None
    if days is None or not 1 <= days <= MAX_DAYS:
        return _refused(page, page.gettext(DAYS_REFUSED))
    if price_text and (price is None or price < 0):
        return _refused(page, page.gettext(PRICE_REFUSED))
    if form.steps:  # the service refuses a journey too (journey_not_replayable); said here in the user's words
        return _refused(page, page.gettext(JOURNEY))
    problems = form.problems()
    if "to_codes" in problems or "template" in problems:
        return _refused(page, page.gettext(INCOMPLETE))
    definition = form.complete().definition() | {"name": form.name or PREVIEW_NAME}
    body: dict[str, Any] = {"definition": definition, "days": days}
    if price is not None:
        body["price_per_segment"] = str(price)
    campaign_id = saved or str(submitted.get("backtest_campaign", ""))
    path = f"/v1/campaigns/{segment(campaign_id)}/backtest" if campaign_id else "/v1/campaigns/backtest"
    try:
        answer = await _open(page, path, body)
    except BackendProblem as refused:
        messages = list(page.field_errors(refused).values()) or [refused.detail]
        return _refused(page, " ".join(messages))
    return StreamingResponse(_relayed(page, answer, price), media_type="application/x-ndjson")


def _number(value: Any, kind: type[int] | type[float]) -> Any:
    try:
        return kind(str(value).strip().replace(",", "."))
    except (TypeError, ValueError):
        return None


def _refused(page: Page, message: str) -> Response:
    return page.render("campaigns/backtest_result.html", status_code=422, problem=message, result=None)


async def _open(page: Page, path: str, body: dict[str, Any]) -> httpx.Response:
    """The campaigns service's stream, with the user's token; a refusal raised as the service worded it."""
    backends: Backends = page.request.app.state.backends
    token = await backends.tokens.token(page.api.token)
    request = backends.http.build_request(
        "POST", f"{backends.urls[Service.CAMPAIGNS]}{path}", json=body,
        headers={"Authorization": f"Bearer {token}"}, timeout=STREAM_TIMEOUT,
    )  # fmt: skip
    try:
        answer = await backends.http.send(request, stream=True)
    except httpx.HTTPError as exc:
        raise BackendUnavailable(Service.CAMPAIGNS, type(exc).__name__) from exc
    if answer.status_code == 200:
        return answer
    content = await answer.aread()
    await answer.aclose()
    if answer.status_code >= 500:
        raise BackendUnavailable(Service.CAMPAIGNS, f"HTTP {answer.status_code}")
    problem = json.loads(content) if content.startswith(b"{") else {"detail": content.decode(errors="replace")}
    raise BackendProblem(Service.CAMPAIGNS, answer.status_code, problem)


async def _relayed(page: Page, answer: httpx.Response, price: float | None) -> AsyncIterator[bytes]:
    """Progress lines as they come; the result (or the error) as one line of HTML for the panel."""
    try:
        async for line in answer.aiter_lines():
            if not line.strip():
                continue
            item = json.loads(line)
            if "progress" in item:
                yield (line + "\n").encode()
            elif "result" in item:
                html = _result_html(page, item["result"], price)
                yield (json.dumps({"html": html}, ensure_ascii=False) + "\n").encode()
            elif "error" in item:
                html = _problem_html(
                    page, page.gettext("The backtest stopped: the orders could not be read. Try again.")
                )
                yield (json.dumps({"html": html}, ensure_ascii=False) + "\n").encode()
    finally:
        await answer.aclose()


def _problem_html(page: Page, message: str) -> str:
    return bytes(_refused(page, message).body).decode()


def _result_html(page: Page, result: dict[str, Any], price: float | None) -> str:
    fmt = page.fmt
    bars = [
        Bar(fmt.day(date.fromisoformat(d["day"])), d["sms"], page.gettext("%(count)s SMS", count=fmt.number(d["sms"])))
        for d in result["per_day"]
    ]
    chart = bar_chart(
        "backtest-chart",
        page.gettext("SMS per day"),
        page.gettext("How many SMS the campaign would have sent each day of the period."),
        bars,
        fmt.number,
    )
    reasons = [(explain.reason(page.gettext, r["code"]), r["changes"]) for r in result["filtered_out_by_reason"]]
    rendered = page.render(
        "campaigns/backtest_result.html", result=result, reasons=reasons, chart=chart, price=price, problem=None
    )
    return bytes(rendered.body).decode()
