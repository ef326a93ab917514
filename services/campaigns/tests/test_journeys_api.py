"""Journeys over HTTP: create, edit and read one (each saved definition kept), refusals naming each field, the
preview's timeline and the figures endpoint."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI

from campaigns.settings import CampaignsSettings

from . import test_journeys_domain as shapes
from .conftest import SEED_CAMPAIGN, Client

SAMPLE_ORDER: dict[str, Any] = {
    "order_id": "o-42",
    "amount": "1990.00",
    "currency": "RUB",
    "customer": {"id": "c-1", "phone": "8 (916) 123-45-67", "name": "Anna", "sms_consent": True},
    "statuses": {"general": "accepted"},
}


async def test_a_journey_is_created_edited_and_read_with_each_version_kept(
    demo: httpx.AsyncClient, campaigns_settings: CampaignsSettings
) -> None:
    created = await demo.post("/v1/campaigns", json=shapes.REMINDER)
    assert created.status_code == 201, created.text
    body = created.json()
    assert [s["kind"] for s in body["steps"]] == [s["kind"] for s in shapes.REMINDER["steps"]]
    assert body["exit_conditions"] == shapes.REMINDER["exit_conditions"] and body["late_send_minutes"] == 60
    assert body["template"] is None
    campaign_id = body["id"]
    edited = shapes.REMINDER | {"late_send_minutes": 120, "steps": shapes.REMINDER["steps"][:3]}
    replaced = await demo.put(f"/v1/campaigns/{campaign_id}", json=edited, headers={"If-Match": '"1"'})
    assert replaced.status_code == 200, replaced.text
    read = (await demo.get(f"/v1/campaigns/{campaign_id}")).json()
    assert len(read["steps"]) == 3 and read["late_send_minutes"] == 120 and read["version"] == 2
    stale = await demo.put(f"/v1/campaigns/{campaign_id}", json=shapes.REMINDER, headers={"If-Match": '"1"'})
    assert stale.status_code == 412  # the concurrency rule for writes, unchanged

    conn = await asyncpg.connect(campaigns_settings.database_url)
    try:
        kept = await conn.fetch(
            "SELECT version, jsonb_array_length(definition->'steps') AS n FROM campaign_versions "
            "WHERE campaign_id = $1 ORDER BY version",
            campaign_id,
        )
    finally:
        await conn.close()
    assert [(r["version"], r["n"]) for r in kept] == [(1, 6), (2, 3)]


async def test_the_seed_campaign_reads_exactly_as_before(demo: httpx.AsyncClient) -> None:
    created = (await demo.post("/v1/campaigns", json=SEED_CAMPAIGN)).json()
    assert set(created) == {
        *SEED_CAMPAIGN,
        "reentry",
        "transactional",
        "quiet_hours",
        "id",
        "partner_id",
        "state",
        "version",
        "activated_at",
        "created_at",
        "updated_at",
    }


async def test_a_journeys_problems_are_422s_naming_each_field(demo: httpx.AsyncClient) -> None:
    steps = [*shapes.REMINDER["steps"]]
    steps[2] = steps[2] | {"template": "Hi {{ promo }}"}
    steps[1] = {"kind": "filter", "conditions": [shapes.AWAITING | {"value": "teleported"}]}
    refused = await demo.post("/v1/campaigns", json=shapes.REMINDER | {"steps": steps, "template": "Hi"})
    assert refused.status_code == 422 and refused.headers["content-type"] == "application/problem+json"
    errors = {e["field"]: e for e in refused.json()["errors"]}
    assert set(errors) == {"template", "steps.1.conditions.0.value", "steps.2.template"}, errors
    assert all(e["type"] == "rule_violation" for e in errors.values())
    assert "'promo'" in errors["steps.2.template"]["message"] and errors["steps.2.template"]["line"] == 1
    shape = await demo.post(
        "/v1/campaigns", json=shapes.REMINDER | {"steps": [{"kind": "wait_duration", "minutes": 0}]}
    )
    assert shape.status_code == 422 and shape.json()["code"] == "validation_failed"
    assert (await demo.post("/v1/campaigns", json=SEED_CAMPAIGN | {"template": None})).status_code == 422


async def test_the_preview_plays_the_journey_as_a_timeline(demo: httpx.AsyncClient) -> None:
    body = {
        "definition": shapes.REMINDER,
        "from": "invoice_issued",
        "to": "awaiting_payment",
        "order": SAMPLE_ORDER,
    }
    preview = await demo.post("/v1/campaigns/preview", json=body)
    assert preview.status_code == 200, preview.text
    answer = preview.json()
    assert answer["outcome"] == "entered" and answer["text"] == "Order o-42 awaits payment"
    timeline = [(e["after_minutes"], e["step"], e["kind"]) for e in answer["timeline"]]
    assert timeline[0] == (0, None, "entered") and timeline[-1] == (4320, None, "done")
    assert [e["text"] for e in answer["timeline"] if e["kind"] == "send"] == [
        "Order o-42 awaits payment",
        "Last reminder: order o-42",
    ]


async def test_the_journey_figures_are_the_partners_only(
    demo: httpx.AsyncClient, client_for: Client, campaigns_app: FastAPI
) -> None:
    campaign_id = (await demo.post("/v1/campaigns", json=shapes.REMINDER)).json()["id"]
    figures = await demo.get(f"/v1/campaigns/{campaign_id}/journey")
    assert figures.status_code == 200, figures.text
    answer = figures.json()
    assert [s["kind"] for s in answer["steps"]] == [s["kind"] for s in shapes.REMINDER["steps"]]
    assert answer["waiting_total"] == 0 and answer["versions"] == [{"version": 1, "orders_in_journey": 0}]
    assert (await client_for("acme").get(f"/v1/campaigns/{campaign_id}/journey")).status_code == 404
