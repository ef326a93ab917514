"""HTTP API of the backtest: what a campaign would have sent over the last N days (campaigns.backtest).

The answer is NDJSON, streamed as the backtest goes: `{"progress": {"processed", "percent"}}` lines, then one
`{"result": ...}` line (or `{"error": <problem>}` when orders' stream broke off). A client that closes the connection
stops the work here and in orders. Refusals come before the stream, as problems.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from campaigns.api import campaigns, policy
from campaigns.backtest import MAX_DAYS, Backtest, OrdersUnavailable
from campaigns.backtest_replay import BacktestResult
from campaigns.domain import CampaignDefinition
from contracts.identity import Scope
from servicekit.app import runtime_of
from servicekit.auth import CampaignsReader, Principal
from servicekit.errors import FieldError, Forbidden, InvalidRequest, ProblemError, problem_body, problems

router = APIRouter(prefix="/v1", tags=["campaigns"])
NDJSON = "application/x-ndjson"

Days = Annotated[int, Field(ge=1, le=MAX_DAYS, description=f"The last N days, 1 to {MAX_DAYS}")]
# A JSON number (pydantic documents a Decimal as a number or any string, and the fuzzing sent "b\x13" as one).
Price = Annotated[
    Decimal | None,
    Field(default=None, ge=0, le=1000),
    WithJsonSchema({"anyOf": [{"type": "number", "minimum": 0, "maximum": 1000}, {"type": "null"}]}),
    Field(description="Per segment: the result's cost"),
]


class BacktestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    definition: CampaignDefinition
    days: Days = 30
    price_per_segment: Price = None


class ChangeBacktestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    definition: CampaignDefinition | None = Field(default=None, description="The proposed change; null: as stored")
    days: Days = 30
    price_per_segment: Price = None


_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            NDJSON: {
                "schema": {
                    "type": "object",
                    "properties": {
                        "progress": {
                            "type": "object",
                            "properties": {"processed": {"type": "integer"}, "percent": {"type": "number"}},
                        },
                        "result": BacktestResult.model_json_schema(),
                        "error": {"type": "object", "description": "A problem (RFC 9457): the orders stream broke off"},
                    },
                }
            }
        },
        "description": "NDJSON: progress lines, then one result line",
    },
    **problems(
        403,
        422,
        503,
        s403="`insufficient_scope`: the token lacks orders:read (the backtest reads the orders' history with it)",
        s422="`validation_failed`: `days` outside 1-90, or the definition (as a create refuses it, under "
        "`definition`); `journey_not_replayable`: the definition is a journey (it has `steps`)",
        s503="`orders_unavailable`: the orders service could not be read",
    ),
}


def _refuse_a_journey(definition: CampaignDefinition) -> None:
    """The replay decides each past change at its moment, one change at a time; a journey's waits, re-checks and exits
    depend on what happened to the order later, which it does not replay: a refusal, never a report of entries that
    send nothing."""
    if definition.steps:
        message = "the backtest replays one-step campaigns; a journey's waits, re-checks and exits are not replayed"
        error = FieldError(location="body", field="definition.steps", message=message, type="rule_violation")
        raise InvalidRequest([error], detail=message, code="journey_not_replayable")


def _orders_client(request: Request) -> httpx.AsyncClient:
    """The orders API with the caller's own token: orders scopes the history to the same partner, by itself."""
    settings = request.app.state.settings
    headers = {"Authorization": request.headers.get("authorization", "")}
    return httpx.AsyncClient(base_url=settings.orders_url, headers=headers, timeout=httpx.Timeout(30, read=120))


async def _streamed(request: Request, who: Principal, backtest_of: Any) -> StreamingResponse:
    if not who.allows(Scope.ORDERS_READ):
        raise Forbidden(
            f"token lacks the '{Scope.ORDERS_READ}' scope", code="insufficient_scope", scope=str(Scope.ORDERS_READ)
        )
    orders = _orders_client(request)
    try:
        backtest: Backtest = await backtest_of(orders)
        async with runtime_of(request).pool.acquire() as conn:
            replay = await backtest.prepare(conn)
        stream = await backtest.open(replay)
    except BaseException:
        await orders.aclose()
        raise

    async def body() -> AsyncIterator[bytes]:
        lines = backtest.run(replay, stream)
        try:
            async for line in lines:
                yield (json.dumps(line, ensure_ascii=False) + "\n").encode()
        except ProblemError as error:
            problem = problem_body(error.status, error.detail, code=error.code, **error.extensions)
            yield (json.dumps({"error": problem}, ensure_ascii=False) + "\n").encode()
        finally:
            await lines.aclose()
            await orders.aclose()

    return StreamingResponse(body(), media_type=NDJSON)


@router.post("/campaigns/backtest", response_class=StreamingResponse, responses=_ANSWERS)
async def backtest_draft(body: BacktestRequest, request: Request, who: CampaignsReader) -> StreamingResponse:
    """What this definition would have sent over the last `days` days of the partner's real status changes, each
    decided as the live consumer decides, at the moment it was applied, as if the campaign had been active and had
    sent nothing before. Sends nothing, stores nothing. Needs orders:read too."""
    use_cases = campaigns(request, who)

    async def backtest_of(orders: httpx.AsyncClient) -> Backtest:
        await use_cases.check_draft(body.definition)
        _refuse_a_journey(body.definition)
        return Backtest(
            who.partner_id,
            body.definition,
            body.days,
            policy(request),
            orders,
            request.app.state.clock,
            request.app.state.backtest_worker,
            price_per_segment=body.price_per_segment,
        )

    return await _streamed(request, who, backtest_of)


@router.post(
    "/campaigns/{campaign_id:campaign_id}/backtest",
    response_class=StreamingResponse,
    responses={**_ANSWERS, **problems(404)},
)
async def backtest_change(
    campaign_id: str, body: ChangeBacktestRequest, request: Request, who: CampaignsReader
) -> StreamingResponse:
    """The same for a change to a stored campaign (`definition`; absent: the campaign as stored): its own SMS before
    the period count for once per order, and its real SMS in the period are replaced by the replayed ones in the
    frequency cap. Sends nothing, stores nothing. Needs orders:read too."""
    use_cases = campaigns(request, who)

    async def backtest_of(orders: httpx.AsyncClient) -> Backtest:
        stored = await use_cases.get(campaign_id)
        definition = body.definition or stored.definition()
        await use_cases.check_draft(definition)
        _refuse_a_journey(definition)
        return Backtest(
            who.partner_id,
            definition,
            body.days,
            policy(request),
            orders,
            request.app.state.clock,
            request.app.state.backtest_worker,
            campaign_id=stored.id,
            price_per_segment=body.price_per_segment,
        )

    return await _streamed(request, who, backtest_of)


__all__ = ["OrdersUnavailable", "router"]
