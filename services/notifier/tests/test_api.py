"""The notifier's HTTP API: messages with filters and cursors, opt-outs, the inbound STOP hook; partner scoping."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from servicekit.pagination import decode_cursor

A, B = "+79161230001", "+79161230002"


async def test_messages_filter_and_paginate_newest_first(kit: Any, notifier_app: FastAPI, client_for: Any) -> None:
    sent = [
        kit.command(phone=A, order="o-1", campaign="c-1"),
        kit.command(phone=A, order="o-2", campaign="c-1"),
        kit.command(phone=B, order="o-2", campaign="c-2"),
        kit.command(phone="+74951234567", order="o-3", campaign="c-2"),  # a landline: failed
        kit.command(partner="other", phone=A, order="o-1"),
    ]
    await kit.publish(*sent)
    for sms in sent:
        await kit.wait_status(sms.id, "delivered", "failed")
    acme = client_for("acme")

    async def ids(**params: Any) -> list[str]:
        response = await acme.get("/v1/messages", params=params)
        assert response.status_code == 200, response.text
        return [m["send_sms_id"] for m in response.json()["items"]]

    # Partitions interleave the commands, so the listing follows arrival (newest first), not publishing.
    everything = await ids()
    assert sorted(everything) == sorted(s.id for s in sent[:4])
    assert sorted(await ids(order_id="o-2")) == sorted([sent[2].id, sent[1].id])
    assert sorted(await ids(phone=A)) == sorted([sent[1].id, sent[0].id])
    assert await ids(campaign_id="c-2", status="failed") == [sent[3].id]

    pages, cursor = [], None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        body = (await acme.get("/v1/messages", params=params)).json()
        pages.append([m["send_sms_id"] for m in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == [everything[:3], everything[3:]]
    # The cursor names the page's last message, not its row number among every partner's messages; another
    # partner's cursor leads nowhere.
    first = (await acme.get("/v1/messages", params={"limit": 3})).json()
    assert decode_cursor(first["next_cursor"], str) == (first["items"][-1]["message_id"],)
    elsewhere = await client_for("other").get("/v1/messages", params={"cursor": first["next_cursor"]})
    assert elsewhere.status_code == 200 and elsewhere.json()["items"] == []
    assert (await acme.get("/v1/messages", params={"cursor": "%%%"})).status_code == 422
    assert (await acme.get("/v1/messages", params={"status": "lost"})).status_code == 422
    assert (await acme.get("/v1/messages/not-a-uuid")).status_code == 404


async def test_opt_outs_are_managed_per_partner(kit: Any, notifier_app: FastAPI, client_for: Any) -> None:
    acme, other = client_for("acme"), client_for("other")
    assert (await acme.post(f"/v1/opt-outs/{A}")).status_code == 201
    assert (await acme.post(f"/v1/opt-outs/{A}")).status_code == 200  # repeating is a no-op
    assert (await acme.post(f"/v1/opt-outs/{B}")).status_code == 201
    assert (await acme.post("/v1/opt-outs/+74951234567")).status_code == 422  # no mobile: nothing to opt out
    listed = (await acme.get("/v1/opt-outs", params={"limit": 1})).json()
    assert [o["phone"] for o in listed["items"]] == [A] and listed["next_cursor"] is not None
    rest = (await acme.get("/v1/opt-outs", params={"cursor": listed["next_cursor"]})).json()
    assert [o["phone"] for o in rest["items"]] == [B] and rest["next_cursor"] is None
    malformed = (await acme.get("/v1/opt-outs", params={"cursor": A})).json()  # a phone is not a cursor
    assert (malformed["status"], malformed["errors"][0]["field"]) == (422, "cursor")
    assert (await other.get("/v1/opt-outs")).json()["items"] == []
    assert (await other.delete(f"/v1/opt-outs/{A}")).status_code == 404
    assert (await acme.delete(f"/v1/opt-outs/{A}")).status_code == 204
    assert (await acme.delete(f"/v1/opt-outs/{A}")).status_code == 404

    # Other partners are unaffected by acme's ledger.
    theirs = kit.command(partner="other", phone=B)
    await kit.publish(theirs)
    await kit.wait_status(theirs.id, "delivered")


async def test_tokens_and_scopes(notifier_app: FastAPI, client_for: Any) -> None:
    anonymous = httpx.AsyncClient(transport=httpx.ASGITransport(app=notifier_app), base_url="http://n")
    async with anonymous:
        assert (await anonymous.get("/v1/messages")).status_code == 401
    reader = client_for("acme", ("read",))
    assert (await reader.get("/v1/opt-outs")).status_code == 200
    assert (await reader.post(f"/v1/opt-outs/{A}")).status_code == 403


async def test_an_inbound_stop_reply_opts_the_number_out(kit: Any, notifier_app: FastAPI, client_for: Any) -> None:
    first = kit.command(phone=A)
    await kit.publish(first, kit.command(partner="other", phone=A))
    await kit.wait_status(first.id, "delivered")
    secret = {"X-Webhook-Secret": kit.settings.delivery_report_secret}
    hook = httpx.AsyncClient(transport=httpx.ASGITransport(app=notifier_app), base_url="http://n", headers=secret)
    async with hook:
        ignored = await hook.post("/v1/inbound/http", json={"from": A, "text": "Спасибо!"})
        assert ignored.json() == {"opted_out_partners": []}

        async def opted(partner: str) -> list[str]:
            return [o["phone"] for o in (await client_for(partner).get("/v1/opt-outs")).json()["items"]]

        assert await opted("acme") == []
        stop = await hook.post("/v1/inbound/http", json={"from": A, "text": " СТОП "})
        assert sorted(stop.json()["opted_out_partners"]) in (["acme"], ["acme", "other"])
        assert (
            await hook.post(
                "/v1/inbound/http", json={"from": A, "text": "stop"}, headers={"X-Webhook-Secret": "no-no-no-no-no-no"}
            )
        ).status_code == 401
    assert await opted("acme") == [A]
    (entry,) = (await client_for("acme").get("/v1/opt-outs")).json()["items"]
    assert entry["source"] == "inbound"
    after = kit.command(phone=A)
    await kit.publish(after)
    await kit.wait_status(after.id, "failed")


async def test_errors_are_problem_details_naming_what_was_refused(notifier_app: FastAPI, client_for: Any) -> None:
    acme = client_for("acme")
    answers = {
        "cursor": await acme.get("/v1/messages", params={"cursor": "%%%"}),
        "missing": await acme.get("/v1/messages/not-a-uuid"),
        "landline": await acme.post("/v1/opt-outs/+74951234567"),
        "not opted out": await acme.delete(f"/v1/opt-outs/{B}"),
        "no secret": await acme.post("/v1/delivery-reports/http", json={}),
    }
    for what, answer in answers.items():
        assert answer.headers["content-type"] == "application/problem+json", what
        assert answer.json()["status"] == answer.status_code, what
    assert [a.status_code for a in answers.values()] == [422, 404, 422, 404, 401]
    cursor_error = answers["cursor"].json()["errors"][0]
    assert (cursor_error["location"], cursor_error["field"]) == ("query", "cursor")
    assert answers["landline"].json()["code"] == "invalid_phone"
    assert answers["landline"].json()["errors"][0]["field"] == "phone"
