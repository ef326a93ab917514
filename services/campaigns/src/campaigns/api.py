"""HTTP API of the campaigns service: CRUD, activate/pause, preview, stats and partner settings.

Every request is scoped by the caller's token: another partner's campaign answers 404 like a missing one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from campaigns.domain import (
    Campaign,
    CampaignDefinition,
    CampaignState,
    Decision,
    Outcome,
    PartnerSettings,
    Policy,
    PreviewOrder,
    Reason,
    SendSmsStep,
    render_text,
)
from campaigns.journeys import JourneyFigures, TimelineEntry
from campaigns.repository import CampaignStats
from campaigns.services import Campaigns, IndexKeeper, policy_of
from campaigns.templating import TemplateProblem
from contracts.orders import OrderStatusChanged
from contracts.primitives import RequestDatetime, Slug
from contracts.sms import SmsEncoding
from contracts.sms_text import sms_parts
from contracts.topics import Topic
from servicekit.app import parts_of
from servicekit.auth import CampaignsReader, CampaignsWriter, Principal
from servicekit.errors import problems
from servicekit.http import register_id_in_path, version_from_if_match, with_etag
from servicekit.pagination import decode_cursor, page_of

router = APIRouter(prefix="/v1", tags=["campaigns"])


register_id_in_path("campaign_id", ("preview", "stats", "backtest"))


class CampaignPage(BaseModel):
    items: list[Campaign]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


class Stats(BaseModel):
    triggered: int = Field(description="Events whose status change matched the trigger (each evaluated once)")
    fired: int
    filtered_out: int
    filtered_out_by_reason: dict[str, int] = Field(description="A failing condition's reason code -> events")
    capped: int
    outside_reentry: int
    failed: int = Field(description="The template could not produce a sendable text for the order")
    failed_by_reason: dict[str, int] = Field(
        description="template: it rendered no sendable text; template_limit: it exceeded a render limit"
    )
    sms_requested: int
    sms_sent: int = Field(description="Reported dispatched by the notifier")
    sms_delivered: int
    sms_failed: int
    sms_failed_by_reason: dict[str, int]


Since = Annotated[
    RequestDatetime | None, Query(description="Only what happened since then (e.g. the last day); all time when absent")
]


class CampaignStatsItem(Stats):
    campaign_id: str


class StatsList(BaseModel):
    items: list[CampaignStatsItem] = Field(description="One per campaign asked for, in the order asked")


class PreviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: Slug | None = Field(default=None, alias="from", description="null: the order's first status of the type")
    to: Slug
    order: PreviewOrder


class DraftPreviewRequest(PreviewRequest):
    definition: CampaignDefinition


class Preview(BaseModel):
    outcome: Outcome
    would_send: bool
    reasons: list[Reason]
    text: str | None = Field(description="The rendered SMS (also when the decision is not to send)")
    template_error: str | None
    encoding: SmsEncoding | None
    characters: int = Field(
        description="Characters as the SMS bills them: GSM-7 septets (an extension character such as € counts 2) or"
        " UCS-2 code units (an emoji counts 2), the same count the segments follow"
    )
    segments: int
    phone: str | None = Field(description="E.164, when the decision is to send")
    time_zone: str | None
    not_before: datetime | None = Field(description="Held until then by quiet hours; null: sent at once")
    timeline: list[TimelineEntry] | None = Field(
        default=None,
        description="A journey the order enters: the order played through its steps as if it did not change "
        "(`text`: its first send_sms step's); absent for a one-step campaign",
    )

    @model_serializer(mode="wrap")
    def _without_timeline(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        """A one-step campaign's preview stays what it was before journeys. (No return annotation: pydantic then
        keeps the model's own serialization schema.)"""
        dumped = handler(self)
        if isinstance(dumped, dict) and self.timeline is None:
            dumped.pop("timeline", None)
        return dumped


def campaigns(request: Request, principal: Principal) -> Campaigns:
    runtime = request.app.state.runtime
    settings = request.app.state.settings
    return Campaigns(
        runtime.pool,
        principal.partner_id,
        runtime.catalog,
        parts_of(runtime, IndexKeeper).index,
        request.app.state.clock,
        settings.topic(Topic.CAMPAIGN_STATUS_USAGE),
    )


def policy(request: Request) -> Policy:
    return policy_of(request.app.state.settings)


# --- campaigns -----------------------------------------------------------------------------------


@router.post("/campaigns", status_code=status.HTTP_201_CREATED, response_model=Campaign, responses=problems(409))
async def create_campaign(
    body: CampaignDefinition, request: Request, response: Response, who: CampaignsWriter
) -> Campaign:
    """Create a campaign in `draft`; activate it to start sending."""
    created = await campaigns(request, who).create(body)
    response.headers["Location"] = f"/v1/campaigns/{created.id}"
    return with_etag(response, created)


@router.get(
    "/campaigns",
    response_model=CampaignPage,
    responses=problems(422, s422="`validation_failed`: a parameter, or a malformed cursor"),
)
async def list_campaigns(
    request: Request,
    who: CampaignsReader,
    state: CampaignState | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> CampaignPage:
    (after,) = decode_cursor(cursor, str) if cursor else (None,)
    rows = await campaigns(request, who).page(state, after, limit + 1)
    items, next_cursor = page_of(rows, limit, lambda campaign: (campaign.id,))
    return CampaignPage(items=items, next_cursor=next_cursor)


@router.get(
    "/campaigns/stats",
    response_model=StatsList,
    responses=problems(404, 422, s422="`validation_failed`: no `campaign_id`, or more than 100"),
)
async def stats_of_campaigns(
    request: Request,
    who: CampaignsReader,
    campaign_id: Annotated[
        list[str], Query(min_length=1, max_length=100, description="Repeat for each campaign (at most 100)")
    ],
    since: Since = None,
) -> StatsList:
    """Several campaigns' stats in one call (a list page's counts); 404 names any id that is not the partner's."""
    asked = list(dict.fromkeys(campaign_id))  # each once, in the order asked
    found = await campaigns(request, who).stats_of(asked, since)
    return StatsList(items=[CampaignStatsItem(campaign_id=c, **_stats(found[c]).model_dump()) for c in asked])


@router.get("/campaigns/{campaign_id:campaign_id}", response_model=Campaign, responses=problems(404))
async def get_campaign(campaign_id: str, request: Request, response: Response, who: CampaignsReader) -> Campaign:
    return with_etag(response, await campaigns(request, who).get(campaign_id))


@router.put(
    "/campaigns/{campaign_id:campaign_id}",
    response_model=Campaign,
    responses=problems(404, 409, 412, s409="An archived campaign cannot be edited, or a race"),
)
async def replace_campaign(
    campaign_id: str,
    body: CampaignDefinition,
    request: Request,
    response: Response,
    who: CampaignsWriter,
    if_match: Annotated[str | None, Header()] = None,
) -> Campaign:
    """Replace the definition (state unchanged); with `If-Match`, only if still at that version."""
    updated = await campaigns(request, who).replace(campaign_id, body, version_from_if_match(if_match, required=False))
    return with_etag(response, updated)


@router.delete("/campaigns/{campaign_id:campaign_id}", response_model=Campaign, responses=problems(404))
async def archive_campaign(campaign_id: str, request: Request, response: Response, who: CampaignsWriter) -> Campaign:
    """Archive: stops for good; evaluations and stats stay readable."""
    return with_etag(response, await campaigns(request, who).set_state(campaign_id, CampaignState.ARCHIVED))


@router.post(
    "/campaigns/{campaign_id:campaign_id}/activate",
    response_model=Campaign,
    responses=problems(404, 409, s409="`invalid_state`: an archived campaign cannot be activated"),
)
async def activate_campaign(campaign_id: str, request: Request, response: Response, who: CampaignsWriter) -> Campaign:
    return with_etag(response, await campaigns(request, who).set_state(campaign_id, CampaignState.ACTIVE))


@router.post(
    "/campaigns/{campaign_id:campaign_id}/pause",
    response_model=Campaign,
    responses=problems(404, 409, s409="`invalid_state`: a draft or archived campaign cannot be paused"),
)
async def pause_campaign(campaign_id: str, request: Request, response: Response, who: CampaignsWriter) -> Campaign:
    return with_etag(response, await campaigns(request, who).set_state(campaign_id, CampaignState.PAUSED))


@router.get("/campaigns/{campaign_id:campaign_id}/stats", response_model=Stats, responses=problems(404))
async def campaign_stats(campaign_id: str, request: Request, who: CampaignsReader, since: Since = None) -> Stats:
    return _stats(await campaigns(request, who).stats(campaign_id, since))


def _stats(stats: CampaignStats) -> Stats:
    outcomes = stats.outcomes
    return Stats(
        triggered=sum(outcomes.values()),
        fired=outcomes[Outcome.FIRED],
        filtered_out=outcomes[Outcome.FILTERED_OUT],
        filtered_out_by_reason=dict(sorted(stats.filtered_out_by_reason.items())),
        capped=outcomes[Outcome.CAPPED],
        outside_reentry=outcomes[Outcome.OUTSIDE_REENTRY],
        failed=outcomes[Outcome.FAILED],
        failed_by_reason=dict(sorted(stats.failed_evaluations_by_reason.items())),
        sms_requested=outcomes[Outcome.FIRED],
        sms_sent=stats.sms["dispatched"],
        sms_delivered=stats.sms["delivered"],
        sms_failed=stats.sms["failed"],
        sms_failed_by_reason=dict(sorted(stats.failed_by_reason.items())),
    )


@router.post("/campaigns/{campaign_id:campaign_id}/preview", response_model=Preview, responses=problems(404))
async def preview_campaign(campaign_id: str, body: PreviewRequest, request: Request, who: CampaignsReader) -> Preview:
    """Dry run: what the campaign would decide and send for this change of this order. Writes nothing."""
    use_cases = campaigns(request, who)
    campaign = await use_cases.get(campaign_id)
    event = use_cases.preview_event(body.order, body.from_, body.to)
    return _preview(campaign, event, *await use_cases.preview(campaign_id, event, policy(request)))


@router.post("/campaigns/preview", response_model=Preview, responses=problems(422))
async def preview_draft(body: DraftPreviewRequest, request: Request, who: CampaignsReader) -> Preview:
    """Dry run of an unsaved definition (a campaign editor's live preview): what it would decide and send for this
    change of this order if it were active and had never sent anything. Refused like a create when invalid
    (`errors` under `definition`). Writes nothing."""
    use_cases = campaigns(request, who)
    event = use_cases.preview_event(body.order, body.from_, body.to)
    return _preview(body.definition, event, *await use_cases.preview_draft(body.definition, event, policy(request)))


@router.get("/campaigns/{campaign_id:campaign_id}/journey", response_model=JourneyFigures, responses=problems(404))
async def campaign_journey(campaign_id: str, request: Request, who: CampaignsReader) -> JourneyFigures:
    """A journey's figures per step of its current definition (entered, waiting now, exited, filtered out, sent)
    and how many orders wait on each saved version (an edit never strands them: each goes on with its own)."""
    return await campaigns(request, who).journey(campaign_id)


def _preview(
    campaign: CampaignDefinition,
    event: OrderStatusChanged,
    decision: Decision,
    timeline: list[TimelineEntry] | None = None,
) -> Preview:
    text, error = None, None
    template = campaign.template or next((s.template for s in campaign.steps if isinstance(s, SendSmsStep)), "")
    try:
        text = render_text(template, event)
    except TemplateProblem as problem:
        error = str(problem)
    parts = sms_parts(text) if text else None
    sms = decision.sms
    return Preview(
        outcome=decision.outcome,
        would_send=decision.outcome == Outcome.FIRED,
        reasons=decision.reasons,
        text=text,
        template_error=error,
        encoding=parts.encoding if parts else None,
        characters=parts.units if parts else 0,
        segments=parts.segments if parts else 0,
        phone=sms.phone if sms else None,
        time_zone=sms.time_zone if sms else None,
        not_before=sms.not_before if sms else None,
        timeline=timeline,
    )


# --- partner settings ----------------------------------------------------------------------------


@router.get("/settings", response_model=PartnerSettings, tags=["settings"])
async def get_settings(request: Request, who: CampaignsReader) -> PartnerSettings:
    """The partner's defaults: quiet hours and frequency cap (the built-in defaults until set)."""
    return await campaigns(request, who).settings()


@router.put("/settings", response_model=PartnerSettings, tags=["settings"])
async def put_settings(body: PartnerSettings, request: Request, who: CampaignsWriter) -> PartnerSettings:
    return await campaigns(request, who).save_settings(body)
