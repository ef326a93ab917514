"""The campaigns HTTP API against real PostgreSQL and Kafka: CRUD, states, validation, auth, isolation, preview."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from fastapi import FastAPI

Client = Callable[..., httpx.AsyncClient]

PREVIEW_ORDER: dict[str, Any] = {
    "order_id": "o-42",
    "amount": "1990.00",
    "currency": "RUB",
    "customer": {"id": "c-1", "phone": "8 (916) 123-45-67", "name": "Anna", "sms_consent": True},
    "statuses": {"general": "accepted", "payment": "paid"},
}


async def test_create_read_list_and_replace(demo: httpx.AsyncClient, seed_campaign: dict[str, Any]) -> None:
    created = await demo.post("/v1/campaigns", json=seed_campaign)
    assert created.status_code == 201, created.text
    body = created.json()
    assert created.headers["Location"] == f"/v1/campaigns/{body['id']}" and created.headers["ETag"] == '"1"'
    assert body["state"] == "draft" and body["reentry"] == "once_per_order" and body["quiet_hours"] == "partner_default"
    assert body["trigger"] == {"status_type": "delivery", "from": "any", "to": "shipped"}
    assert (await demo.get(f"/v1/campaigns/{body['id']}")).json() == body

    second = (await demo.post("/v1/campaigns", json=seed_campaign | {"name": "Second"})).json()
    listed = (await demo.get("/v1/campaigns", params={"limit": 1})).json()
    assert [c["id"] for c in listed["items"]] == [body["id"]] and listed["next_cursor"] is not None
    rest = (await demo.get("/v1/campaigns", params={"limit": 1, "cursor": listed["next_cursor"]})).json()
    assert [c["id"] for c in rest["items"]] == [second["id"]] and rest["next_cursor"] is None
    malformed = (await demo.get("/v1/campaigns", params={"cursor": body["id"]})).json()  # an id is not a cursor
    assert (malformed["status"], malformed["errors"][0]["field"]) == (422, "cursor")

    edited = seed_campaign | {"trigger": {"status_type": "delivery", "from": "none", "to": ["shipped", "delivered"]}}
    stale = await demo.put(f"/v1/campaigns/{body['id']}", json=edited, headers={"If-Match": '"7"'})
    assert stale.status_code == 412
    replaced = await demo.put(f"/v1/campaigns/{body['id']}", json=edited, headers={"If-Match": '"1"'})
    assert replaced.status_code == 200 and replaced.headers["ETag"] == '"2"'
    assert replaced.json()["trigger"]["to"] == ["shipped", "delivered"]
    same = await demo.put(f"/v1/campaigns/{body['id']}", json=edited)
    assert same.json()["version"] == 2  # nothing changed, no new version
    renamed = await demo.put(
        f"/v1/campaigns/{body['id']}", json=edited | {"name": "Renamed"}, headers={"If-Match": "*"}
    )
    assert renamed.status_code == 200 and renamed.headers["ETag"] == '"3"'  # `*`: whatever version is current


async def test_states_activate_pause_archive(demo: httpx.AsyncClient, seed_campaign: dict[str, Any]) -> None:
    campaign_id = (await demo.post("/v1/campaigns", json=seed_campaign)).json()["id"]
    assert (await demo.post(f"/v1/campaigns/{campaign_id}/pause")).status_code == 409  # a draft never ran
    assert (await demo.post(f"/v1/campaigns/{campaign_id}/activate")).json()["state"] == "active"
    assert (await demo.post(f"/v1/campaigns/{campaign_id}/activate")).json()["version"] == 2  # idempotent
    assert (await demo.post(f"/v1/campaigns/{campaign_id}/pause")).json()["state"] == "paused"
    assert (await demo.get("/v1/campaigns", params={"state": "paused"})).json()["items"][0]["id"] == campaign_id
    archived = await demo.delete(f"/v1/campaigns/{campaign_id}")
    assert archived.status_code == 200 and archived.json()["state"] == "archived"
    refused = await demo.post(f"/v1/campaigns/{campaign_id}/activate")
    assert refused.status_code == 409 and "archived" in refused.json()["detail"]
    assert refused.json()["code"] == "invalid_state"
    assert (await demo.put(f"/v1/campaigns/{campaign_id}", json=seed_campaign)).status_code == 409


async def test_validation_errors_name_the_field_the_code_and_the_template_line(
    demo: httpx.AsyncClient, seed_campaign: dict[str, Any]
) -> None:
    bad_codes = seed_campaign | {
        "trigger": {"status_type": "delivery", "from": ["paid"], "to": ["shipped", "teleported"]},
        "filters": [{"kind": "order_status", "status_type": "general", "op": "not_in", "value": ["nowhere"]}],
    }
    response = await demo.post("/v1/campaigns", json=bad_codes)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "validation_failed"
    assert [(e["location"], e["field"], e["message"]) for e in response.json()["errors"]] == [
        ("body", "trigger.from", "'paid' is a payment status, not delivery"),
        ("body", "trigger.to", "unknown status code 'teleported'"),
        ("body", "filters.0.value", "unknown status code 'nowhere'"),
    ]

    template = await demo.post(
        "/v1/campaigns", json=seed_campaign | {"template": "Hi {{ customer.name }}\n{{ promo }}"}
    )
    assert template.status_code == 422
    (problem,) = template.json()["errors"]
    assert problem["field"] == "template" and problem["line"] == 2 and "'promo'" in problem["message"]
    syntax = await demo.post("/v1/campaigns", json=seed_campaign | {"template": "{% if order.id %}open"})
    assert syntax.status_code == 422 and syntax.json()["errors"][0]["field"] == "template"

    shape = await demo.post(
        "/v1/campaigns",
        json=seed_campaign | {"filters": [{"kind": "order_status", "status_type": "payment", "op": "eq", "value": []}]},
    )
    assert shape.status_code == 422
    unknown_kind = await demo.post("/v1/campaigns", json=seed_campaign | {"filters": [{"kind": "vip"}]})
    assert unknown_kind.status_code == 422
    amounts = await demo.post(
        "/v1/campaigns", json=seed_campaign | {"filters": [{"kind": "amount", "min": 5, "max": 1}]}
    )
    assert amounts.status_code == 422 and "min" in amounts.text
    window = await demo.post("/v1/campaigns", json=seed_campaign | {"quiet_hours": {"start": "25:00", "end": "21:00"}})
    assert window.status_code == 422
    extra = await demo.post("/v1/campaigns", json=seed_campaign | {"colour": "red"})
    assert extra.status_code == 422 and extra.json()["errors"][0]["field"] == "colour"


async def test_bodies_tokens_and_scopes(
    client_for: Client, campaigns_app: FastAPI, demo: httpx.AsyncClient, seed_campaign: dict[str, Any]
) -> None:
    anonymous = httpx.AsyncClient(transport=httpx.ASGITransport(app=campaigns_app), base_url="http://c")
    async with anonymous:
        assert (await anonymous.get("/v1/campaigns")).status_code == 401
        forged = await anonymous.get("/v1/campaigns", headers={"Authorization": "Bearer abc.def.ghi"})
        assert forged.status_code == 401
    reader = client_for("demo", ("read",))
    assert (await reader.get("/v1/campaigns")).status_code == 200
    denied = await reader.post("/v1/campaigns", json=seed_campaign)
    assert denied.status_code == 403 and "write" in denied.json()["detail"]
    assert (await reader.put("/v1/settings", json={})).status_code == 403

    not_json = await demo.post("/v1/campaigns", content=b"name=x", headers={"Content-Type": "text/plain"})
    assert not_json.status_code == 415
    malformed = await demo.post("/v1/campaigns", content=b"{oops", headers={"Content-Type": "application/json"})
    assert malformed.status_code == 422
    huge = await demo.post("/v1/campaigns", json=seed_campaign | {"template": "x" * 70_000})
    assert huge.status_code == 413


async def test_partners_never_see_each_other(client_for: Client, seed_campaign: dict[str, Any]) -> None:
    demo, acme = client_for("demo"), client_for("acme")
    campaign_id = (await demo.post("/v1/campaigns", json=seed_campaign)).json()["id"]
    path = f"/v1/campaigns/{campaign_id}"
    assert (await acme.get(path)).status_code == 404
    assert (await acme.put(path, json=seed_campaign)).status_code == 404
    assert (await acme.delete(path)).status_code == 404
    assert (await acme.post(f"{path}/activate")).status_code == 404
    assert (await acme.post(f"{path}/pause")).status_code == 404
    assert (await acme.get(f"{path}/stats")).status_code == 404
    preview = await acme.post(f"{path}/preview", json={"to": "shipped", "order": PREVIEW_ORDER})
    assert preview.status_code == 404
    assert (await acme.get("/v1/campaigns")).json()["items"] == []
    assert (await demo.get(path)).json()["state"] == "draft"  # untouched
    # several campaigns' stats at once: one of another partner's among them is a 404 naming it (and only it)
    acmes = (await acme.post("/v1/campaigns", json=seed_campaign)).json()["id"]
    several = await acme.get("/v1/campaigns/stats", params={"campaign_id": [acmes, campaign_id]})
    assert (
        several.status_code == 404 and campaign_id in several.json()["detail"] and acmes not in several.json()["detail"]
    )
    own = (await demo.get("/v1/campaigns/stats", params={"campaign_id": campaign_id})).json()["items"]
    assert [i["campaign_id"] for i in own] == [campaign_id]
    assert (await demo.get("/v1/campaigns/stats")).status_code == 422  # no campaign named
    too_many = await demo.get("/v1/campaigns/stats", params={"campaign_id": [campaign_id] * 101})
    assert too_many.status_code == 422
    # A partner's codes are checked against its own catalog only.
    other = await client_for("globex").post("/v1/campaigns", json=seed_campaign)
    assert other.status_code == 422 and "unknown status code 'shipped'" in other.text


async def test_partner_settings(client_for: Client) -> None:
    demo, acme = client_for("demo"), client_for("acme")
    defaults = (await demo.get("/v1/settings")).json()
    assert defaults == {"quiet_hours": {"start": "09:00:00", "end": "21:00:00"}, "frequency_cap": None}
    wanted = {
        "quiet_hours": {"start": "10:00", "end": "20:00"},
        "frequency_cap": {"max_messages": 2, "window_hours": 24},
    }
    saved = await demo.put("/v1/settings", json=wanted)
    assert saved.status_code == 200 and saved.json()["frequency_cap"] == {"max_messages": 2, "window_hours": 24}
    assert (await demo.get("/v1/settings")).json()["quiet_hours"] == {"start": "10:00:00", "end": "20:00:00"}
    assert (await acme.get("/v1/settings")).json() == defaults
    bad = await demo.put("/v1/settings", json={"frequency_cap": {"max_messages": 0, "window_hours": 24}})
    assert bad.status_code == 422


async def test_preview_decides_renders_and_counts_segments_without_side_effects(
    demo: httpx.AsyncClient, seed_campaign: dict[str, Any]
) -> None:
    campaign_id = (await demo.post("/v1/campaigns", json=seed_campaign)).json()["id"]  # a draft can be previewed
    path = f"/v1/campaigns/{campaign_id}/preview"
    fired = await demo.post(path, json={"from": "at_pickup_point", "to": "shipped", "order": PREVIEW_ORDER})
    assert fired.status_code == 200, fired.text
    assert fired.json() | {"reasons": None} == {
        "outcome": "fired",
        "would_send": True,
        "reasons": None,
        "text": "Anna, заказ o-42 Отгружен",
        "template_error": None,
        "encoding": "ucs2",
        "characters": 25,
        "segments": 1,
        "phone": "+79161234567",
        "time_zone": "Europe/Moscow",
        "not_before": None,
    }

    unpaid = PREVIEW_ORDER | {"statuses": {"payment": "awaiting_payment"}, "customer": {"id": "c-1"}}
    filtered = (await demo.post(path, json={"to": "shipped", "order": unpaid})).json()
    assert filtered["outcome"] == "filtered_out" and not filtered["would_send"]
    assert [r["code"] for r in filtered["reasons"]] == ["payment_status"]
    assert filtered["text"] == "Здравствуйте, заказ o-42 Отгружен"  # rendered anyway, for the marketer

    other_target = (await demo.post(path, json={"to": "delivered", "order": PREVIEW_ORDER})).json()
    assert other_target["outcome"] == "not_triggered"
    unknown = await demo.post(path, json={"to": "teleported", "order": PREVIEW_ORDER})
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "to"
    mixed = await demo.post(path, json={"from": "paid", "to": "shipped", "order": PREVIEW_ORDER})
    assert mixed.status_code == 422

    stats = (await demo.get(f"/v1/campaigns/{campaign_id}/stats")).json()
    assert stats["triggered"] == 0 and stats["sms_requested"] == 0  # a preview records nothing


async def test_an_unsaved_definition_previews_like_a_saved_one_and_is_refused_like_a_create(
    demo: httpx.AsyncClient, seed_campaign: dict[str, Any]
) -> None:
    """The campaign editor's live preview: the definition as typed, not yet saved."""
    body = {"definition": seed_campaign, "from": "at_pickup_point", "to": "shipped", "order": PREVIEW_ORDER}
    fired = await demo.post("/v1/campaigns/preview", json=body)
    assert fired.status_code == 200, fired.text
    assert (fired.json()["outcome"], fired.json()["text"], fired.json()["segments"]) == (
        "fired",
        "Anna, заказ o-42 Отгружен",
        1,
    )
    unpaid = PREVIEW_ORDER | {"statuses": {"payment": "awaiting_payment"}}
    filtered = (await demo.post("/v1/campaigns/preview", json=body | {"order": unpaid})).json()
    assert [r["code"] for r in filtered["reasons"]] == ["payment_status"]

    broken = body | {"definition": seed_campaign | {"template": "{% if %}"}}
    refused = await demo.post("/v1/campaigns/preview", json=broken)
    assert refused.status_code == 422
    assert [e["field"] for e in refused.json()["errors"]] == ["definition.template"]
    unknown = body | {"definition": seed_campaign | {"trigger": {"status_type": "delivery", "to": "teleported"}}}
    assert (await demo.post("/v1/campaigns/preview", json=unknown)).status_code == 422
    ancient = body | {"order": PREVIEW_ORDER | {"placed_at": "0001-01-01T00:00:00-01:00"}}  # found by the fuzzer: a 500
    refused = await demo.post("/v1/campaigns/preview", json=ancient)
    assert refused.status_code == 422 and [e["field"] for e in refused.json()["errors"]] == ["order.placed_at"]
    assert (await demo.get("/v1/campaigns")).json()["items"] == []  # nothing was saved


HUGE_LOOP = "{% for i in (1..100000000) %}x{% endfor %}"
# Cheap for the sample name a save renders with; four loops over the letters of a long name are not.
LETTER_LOOPS = (
    "{% assign l = customer.name | split: '' %}"
    "{% for a in l %}{% for b in l %}{% for c in l %}{% for d in l %}.{% endfor %}{% endfor %}{% endfor %}{% endfor %}"
)


async def test_a_template_exceeding_a_render_limit_is_refused_at_save(
    demo: httpx.AsyncClient, seed_campaign: dict[str, Any]
) -> None:
    refused = await demo.post("/v1/campaigns", json=seed_campaign | {"template": HUGE_LOOP})
    assert refused.status_code == 422
    assert "template" in refused.text and "loop iterations" in refused.text
    created = await demo.post("/v1/campaigns", json=seed_campaign | {"template": "Hi"})
    replaced = await demo.put(f"/v1/campaigns/{created.json()['id']}", json=seed_campaign | {"template": HUGE_LOOP})
    assert replaced.status_code == 422 and "loop iterations" in replaced.text


async def test_a_hostile_preview_fails_fast_and_health_checks_answer_meanwhile(
    demo: httpx.AsyncClient, seed_campaign: dict[str, Any]
) -> None:
    """Before render limits, this preview ran 100 ** 4 loop iterations on the event loop: the service froze."""
    created = await demo.post("/v1/campaigns", json=seed_campaign | {"template": LETTER_LOOPS})
    assert created.status_code == 201, created.text
    long_name = {"id": "c-1", "phone": "+79161234567", "name": "Я" * 100, "sms_consent": True}
    body = {"to": "shipped", "order": PREVIEW_ORDER | {"customer": long_name}}
    preview, health = await asyncio.gather(
        demo.post(f"/v1/campaigns/{created.json()['id']}/preview", json=body), demo.get("/healthz")
    )
    assert health.status_code == 200
    assert preview.status_code == 200, preview.text
    answer = preview.json()
    assert answer["outcome"] == "failed" and not answer["would_send"] and answer["text"] is None
    assert [r["code"] for r in answer["reasons"]] == ["template_limit"]
    assert "loop iterations" in answer["template_error"]


async def test_health_readiness_and_docs(demo: httpx.AsyncClient) -> None:
    ready = await demo.get("/readyz")
    assert ready.status_code == 200
    checks = {"database": True, "broker": True, "revoked_clients": True, "status_catalog": True, "campaign_index": True}
    assert ready.json()["checks"] == checks
    assert (await demo.get("/openapi.json")).json()["info"]["title"] == "Campaigns"


async def test_partner_quiet_hours_and_campaign_overrides_drive_the_decision(
    demo: httpx.AsyncClient, seed_campaign: dict[str, Any], clock: Any
) -> None:
    from datetime import UTC, datetime

    clock.now = datetime(2026, 3, 2, 19, 30, tzinfo=UTC)  # 22:30 in Moscow
    polite = (await demo.post("/v1/campaigns", json=seed_campaign)).json()["id"]
    urgent = (await demo.post("/v1/campaigns", json=seed_campaign | {"quiet_hours": "deliver_immediately"})).json()
    late_window = seed_campaign | {"quiet_hours": {"start": "10:00", "end": "23:00"}}
    late = (await demo.post("/v1/campaigns", json=late_window)).json()["id"]
    body = {"to": "shipped", "order": PREVIEW_ORDER}

    async def hold(campaign_id: str) -> Any:
        return (await demo.post(f"/v1/campaigns/{campaign_id}/preview", json=body)).json()["not_before"]

    assert await hold(polite) == "2026-03-03T06:00:00Z"  # the partner default: 09:00 in Moscow
    assert await hold(urgent["id"]) is None
    assert await hold(late) is None
    await demo.put("/v1/settings", json={"quiet_hours": None})
    assert await hold(polite) is None
    await demo.put("/v1/settings", json={"quiet_hours": {"start": "23:00", "end": "08:00"}})
    assert await hold(polite) == "2026-03-02T20:00:00Z"  # 23:00 in Moscow, the same evening
