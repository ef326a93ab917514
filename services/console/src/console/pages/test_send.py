"""The campaign editor's "Send a test": the preview's text to a phone the marketer types, through the notifier's
`POST /v1/messages/test` (the real provider path, marked as a test in Messages). What the notifier refuses is said
beside the phone field, in the marketer's words: a number that is no mobile, an opted-out number, and the hour's
tests used up (with when the next one is possible)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form
from fastapi.responses import Response

from console.backends import BackendProblem, Service
from console.web import N_, Marketer, Page

router = APIRouter(prefix="/test-send")

NOT_MOBILE = N_("Not a mobile phone number: type it with its country code, such as +79161234567.")
OPTED_OUT = N_(
    "This number opted out of your SMS, so it gets no test either. Send the test to another phone, or remove the "
    "number from Opt-outs if its owner agrees."
)
LIMITED = N_("You have sent %(count)s tests in the last hour. You can send the next one at %(time)s.")
NO_TEXT = N_("The preview has no text to send yet: fill in the campaign's message first.")
# The editor's address names the campaign being tested (htmx sends it as HX-Current-URL); a new one has none yet.
CAMPAIGN_IN_URL = re.compile(r"/campaigns/(?P<id>[^/?#]+)/?(?:[?#].*)?$")


@router.post("")
async def send_test(
    page: Marketer,
    phone: Annotated[str, Form()] = "",
    text: Annotated[str, Form()] = "",
    sender: Annotated[str, Form()] = "",
) -> Response:
    body = {"phone": phone.strip(), "text": text, "sender": sender.strip() or None,
            "campaign_id": campaign_of(page.request.headers.get("hx-current-url", ""))}  # fmt: skip
    if not text.strip():
        return _result(page, error=page.gettext(NO_TEXT), status_code=422)
    try:
        sent = await page.api.post(Service.NOTIFIER, "/v1/messages/test", body)
    except BackendProblem as refused:
        return _result(page, error=refusal_words(page, refused), status_code=refused.status)
    return _result(page, sent=sent)


def campaign_of(editor_url: str) -> str | None:
    """The campaign id in the editor's address, or None for a new campaign."""
    found = CAMPAIGN_IN_URL.search(editor_url)
    return found["id"] if found and found["id"] != "new" else None


def refusal_words(page: Page, refused: BackendProblem) -> str:
    """The notifier's refusal in the marketer's words."""
    if refused.code == "opted_out":
        return page.gettext(OPTED_OUT)
    if refused.code == "test_send_limited":
        retry_at = refused.problem.get("retry_at") or datetime.now(UTC).isoformat()
        limit = refused.problem.get("limit", 10)
        return page.gettext(LIMITED, count=limit, time=page.fmt.when(retry_at, "short"))
    errors = page.field_errors(refused)
    if refused.code == "invalid_phone" or "phone" in errors:
        return page.gettext(NOT_MOBILE)
    labels = {"sender": page.gettext("Sender"), "text": page.gettext("Text")}
    named = [f"{labels[field]}: {message}" for field, message in errors.items() if field in labels]
    return " ".join(named) or refused.detail


def _result(
    page: Page, *, error: str | None = None, sent: dict[str, Any] | None = None, status_code: int = 200
) -> Response:
    return page.render("campaigns/test_send_result.html", status_code, test_error=error, test_sent=sent)
