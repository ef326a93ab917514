"""The registry's HTTP API against real PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

Client = Callable[..., httpx.AsyncClient]

PAID = {"code": "paid", "name": "Оплачен", "type": "payment", "include_in_analytics": True}


def status(code: str, type_: str = "delivery", **extra: Any) -> dict[str, Any]:
    return {"code": code, "name": code.replace("_", " ").title(), "type": type_, **extra}


async def test_create_returns_location_etag_and_the_definition(acme: httpx.AsyncClient) -> None:
    response = await acme.post("/v1/statuses", json=PAID)
    assert response.status_code == 201, response.text
    assert response.headers["Location"] == "/v1/statuses/paid"
    assert response.headers["ETag"] == '"1"'
    body = response.json()
    assert body["name"] == "Оплачен" and body["version"] == 1 and body["archived"] is False
    assert body["allowed_next"] is None and body["include_in_analytics"] is True

    fetched = await acme.get("/v1/statuses/paid")
    assert fetched.status_code == 200 and fetched.json() == body


async def test_duplicate_code_conflicts_naming_the_existing_status(acme: httpx.AsyncClient) -> None:
    await acme.post("/v1/statuses", json=PAID)
    response = await acme.post("/v1/statuses", json=status("paid", "general"))
    assert response.status_code == 409
    assert "paid" in response.json()["detail"] and "Оплачен" in response.json()["detail"]


async def test_bad_input_gets_specific_4xx_never_500(acme: httpx.AsyncClient) -> None:
    bad_code = await acme.post("/v1/statuses", json=status("Bad Code"))
    assert bad_code.status_code == 422 and bad_code.json()["errors"][0]["field"] == "code"
    unknown_field = await acme.post("/v1/statuses", json={**PAID, "colour": "red"})
    assert unknown_field.status_code == 422 and unknown_field.json()["errors"][0]["field"] == "colour"
    long_name = await acme.post("/v1/statuses", json={**PAID, "name": "x" * 101})
    assert long_name.status_code == 422
    wrong_type = await acme.post("/v1/statuses", json={**PAID, "type": "shipping"})
    assert wrong_type.status_code == 422
    malformed = await acme.post("/v1/statuses", content=b"{not json", headers={"Content-Type": "application/json"})
    assert malformed.status_code == 422
    not_json = await acme.post("/v1/statuses", content=b"code=paid", headers={"Content-Type": "text/plain"})
    assert not_json.status_code == 415
    huge = await acme.post("/v1/statuses", json={**PAID, "description": "x" * 70_000})
    assert huge.status_code == 413


async def test_tokens_and_scopes(client_for: Client, registry_app: Any) -> None:
    anonymous = httpx.AsyncClient(transport=httpx.ASGITransport(app=registry_app), base_url="http://r")
    async with anonymous:
        assert (await anonymous.get("/v1/statuses")).status_code == 401
        forged = await anonymous.get("/v1/statuses", headers={"Authorization": "Bearer abc.def.ghi"})
        assert forged.status_code == 401
    reader = client_for("acme", ("read",))
    assert (await reader.get("/v1/statuses")).status_code == 200
    denied = await reader.post("/v1/statuses", json=PAID)
    assert denied.status_code == 403 and "write" in denied.json()["detail"]


async def test_partners_never_see_each_other(client_for: Client) -> None:
    acme, globex = client_for("acme"), client_for("globex")
    assert (await acme.post("/v1/statuses", json=PAID)).status_code == 201
    assert (await globex.get("/v1/statuses/paid")).status_code == 404
    assert (await globex.get("/v1/statuses")).json()["items"] == []
    assert (await globex.patch("/v1/statuses/paid", json={"name": "x"}, headers={"If-Match": '"1"'})).status_code == 404
    assert (await globex.delete("/v1/statuses/paid")).status_code == 404
    # The same code is free for another partner.
    assert (await globex.post("/v1/statuses", json=PAID)).status_code == 201


async def test_list_sorted_by_type_then_position_with_cursor_pages(acme: httpx.AsyncClient) -> None:
    for body in (
        status("paid", "payment", position=1),
        status("shipped", "delivery", position=2),
        status("at_pickup", "delivery", position=1),
        status("accepted", "general", position=5),
        status("completed", "general", position=9),
    ):
        assert (await acme.post("/v1/statuses", json=body)).status_code == 201
    codes, cursor = [], None
    while True:
        page = (await acme.get("/v1/statuses", params={"limit": 2, **({"cursor": cursor} if cursor else {})})).json()
        codes += [s["code"] for s in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert codes == ["accepted", "completed", "at_pickup", "shipped", "paid"]
    delivery = (await acme.get("/v1/statuses", params={"type": "delivery"})).json()["items"]
    assert [s["code"] for s in delivery] == ["at_pickup", "shipped"]
    assert (await acme.get("/v1/statuses", params={"cursor": "garbage!"})).status_code == 422


async def test_a_type_is_reordered_all_at_once_or_not_at_all(client_for: Client) -> None:
    acme = client_for("acme")
    for body in (
        status("shipped", "delivery", position=1),
        status("at_pickup", "delivery", position=2),
        status("delivered", "delivery", position=20),
        status("paid", "payment", position=1),
    ):
        assert (await acme.post("/v1/statuses", json=body)).status_code == 201
    codes = ["at_pickup", "shipped", "delivered"]
    put = await acme.put("/v1/statuses/order/delivery", json={"codes": codes})
    assert put.status_code == 200, put.text
    assert [(s["code"], s["position"], s["version"]) for s in put.json()["statuses"]] == [
        ("at_pickup", 10, 2),
        ("shipped", 20, 2),
        ("delivered", 30, 2),
    ]
    again = await acme.put("/v1/statuses/order/delivery", json={"codes": codes})  # the same order: no new versions
    assert [s["version"] for s in again.json()["statuses"]] == [2, 2, 2]
    listed = (await acme.get("/v1/statuses", params={"type": "delivery"})).json()["items"]
    assert [s["code"] for s in listed] == codes
    assert (await acme.get("/v1/statuses/paid")).json()["version"] == 1  # another type: untouched

    # an order that is not exactly the type's statuses (one added or archived meanwhile) changes nothing
    assert (await acme.delete("/v1/statuses/delivered")).status_code == 200
    stale = await acme.put("/v1/statuses/order/delivery", json={"codes": ["shipped", "at_pickup", "delivered"]})
    assert stale.status_code == 409 and stale.json()["code"] == "status_list_changed", stale.text
    assert "delivered is not among them" in stale.json()["detail"]
    short = await acme.put("/v1/statuses/order/delivery", json={"codes": ["shipped"]})
    assert short.status_code == 409 and "it leaves out at_pickup" in short.json()["detail"]
    twice = await acme.put("/v1/statuses/order/delivery", json={"codes": ["shipped", "shipped", "at_pickup"]})
    assert twice.status_code == 422 and twice.json()["errors"][0]["field"] == "codes"
    assert (await acme.put("/v1/statuses/order/shipping", json={"codes": []})).status_code == 422
    listed = (await acme.get("/v1/statuses", params={"type": "delivery"})).json()["items"]
    assert [(s["code"], s["version"]) for s in listed] == [("at_pickup", 2), ("shipped", 2)]
    # another partner's codes are not the type's statuses of this one: nothing of either changes
    globex = client_for("globex")
    assert (
        await globex.put("/v1/statuses/order/delivery", json={"codes": ["shipped", "at_pickup"]})
    ).status_code == 409
    assert (
        await client_for("acme", ("read",)).put("/v1/statuses/order/delivery", json={"codes": []})
    ).status_code == 403


async def test_patch_needs_if_match_and_refuses_code_changes(acme: httpx.AsyncClient) -> None:
    await acme.post("/v1/statuses", json=PAID)
    assert (await acme.patch("/v1/statuses/paid", json={"name": "Paid"})).status_code == 428
    stale = await acme.patch("/v1/statuses/paid", json={"name": "Paid"}, headers={"If-Match": '"7"'})
    assert stale.status_code == 412
    rename = await acme.patch("/v1/statuses/paid", json={"code": "paid2"}, headers={"If-Match": '"1"'})
    assert rename.status_code == 422 and rename.json()["errors"][0]["field"] == "code"
    ok = await acme.patch(
        "/v1/statuses/paid",
        json={"name": "Paid", "localized_names": {"ru": "Оплачен"}},
        headers={"If-Match": '"1"'},
    )
    assert ok.status_code == 200, ok.text
    assert ok.headers["ETag"] == '"2"' and ok.json()["localized_names"] == {"ru": "Оплачен"}
    same_again = await acme.patch("/v1/statuses/paid", json={"name": "Paid"}, headers={"If-Match": '"2"'})
    assert same_again.json()["version"] == 2  # no change, no new version


async def test_if_match_star_matches_the_current_version(acme: httpx.AsyncClient) -> None:
    """RFC 9110: `If-Match: *` holds for any current representation; it answered 412 precondition_failed."""
    await acme.post("/v1/statuses", json=PAID)
    anything = await acme.patch("/v1/statuses/paid", json={"name": "Paid!"}, headers={"If-Match": "*"})
    assert anything.status_code == 200, anything.text
    assert anything.headers["ETag"] == '"2"' and anything.json()["name"] == "Paid!"
    junk = await acme.patch("/v1/statuses/paid", json={"name": "Paid"}, headers={"If-Match": "yesterday"})
    assert (junk.status_code, junk.json()["code"]) == (412, "version_mismatch")
    archived = await acme.delete("/v1/statuses/paid", headers={"If-Match": "*"})
    assert archived.status_code == 200 and archived.json()["archived"] is True
    missing = await acme.patch("/v1/statuses/nope", json={"name": "Nope"}, headers={"If-Match": "*"})
    assert missing.status_code == 404


async def test_concurrent_patches_with_one_etag_one_wins(acme: httpx.AsyncClient) -> None:
    await acme.post("/v1/statuses", json=PAID)
    first, second = await asyncio.gather(
        acme.patch("/v1/statuses/paid", json={"name": "A"}, headers={"If-Match": '"1"'}),
        acme.patch("/v1/statuses/paid", json={"name": "B"}, headers={"If-Match": '"1"'}),
    )
    assert sorted([first.status_code, second.status_code]) == [200, 412]
    assert (await acme.get("/v1/statuses/paid")).json()["version"] == 2


async def test_archive_and_restore(acme: httpx.AsyncClient) -> None:
    await acme.post("/v1/statuses", json=PAID)
    archived = await acme.delete("/v1/statuses/paid")
    assert archived.status_code == 200 and archived.json()["archived"] is True
    assert (await acme.get("/v1/statuses")).json()["items"] == []
    listed = (await acme.get("/v1/statuses", params={"include_archived": "true"})).json()["items"]
    assert [s["code"] for s in listed] == ["paid"]
    assert (await acme.get("/v1/statuses/paid")).json()["archived"] is True  # stays readable
    again = await acme.delete("/v1/statuses/paid")
    assert again.json()["version"] == 2  # archiving twice changes nothing
    restored = await acme.post("/v1/statuses/paid/restore")
    assert restored.status_code == 200 and restored.json()["archived"] is False and restored.json()["version"] == 3


async def test_allowed_next_and_initial_rules(acme: httpx.AsyncClient) -> None:
    await acme.post("/v1/statuses", json=status("delivered", allowed_next=[]))
    await acme.post("/v1/statuses", json=PAID)
    unknown = await acme.post("/v1/statuses", json=status("shipped", allowed_next=["teleported"]))
    assert unknown.status_code == 422 and "teleported" in unknown.json()["errors"][0]["message"]
    cross = await acme.post("/v1/statuses", json=status("shipped", allowed_next=["paid"]))
    assert cross.status_code == 422 and "within a type" in cross.json()["errors"][0]["message"]
    ok = await acme.post("/v1/statuses", json=status("shipped", allowed_next=["delivered"], is_initial=True))
    assert ok.status_code == 201
    second_initial = await acme.post("/v1/statuses", json=status("at_pickup", is_initial=True))
    assert second_initial.status_code == 409 and "shipped" in second_initial.json()["detail"]
    assert (await acme.post("/v1/statuses", json=status("invoice", "payment", is_initial=True))).status_code == 201


async def test_bulk_sync_creates_updates_archives_and_is_idempotent(acme: httpx.AsyncClient) -> None:
    await acme.post("/v1/statuses", json=status("legacy", "general"))
    await acme.post("/v1/statuses", json=status("accepted", "general"))
    desired = {
        "statuses": [
            status("accepted", "general", name="Принят", is_initial=True, allowed_next=["completed"]),
            status("completed", "general", allowed_next=[]),
            PAID,
        ]
    }
    first = await acme.put("/v1/statuses", json=desired)
    assert first.status_code == 200, first.text
    result = first.json()
    assert sorted(result["created"]) == ["completed", "paid"]
    assert result["updated"] == ["accepted"] and result["archived"] == ["legacy"]
    assert [s["code"] for s in result["statuses"]] == ["accepted", "completed", "paid"]

    second = (await acme.put("/v1/statuses", json=desired)).json()
    assert second["created"] == second["updated"] == second["archived"] == second["restored"] == []
    assert sorted(second["unchanged"]) == ["accepted", "completed", "paid"]

    back = await acme.put("/v1/statuses", json={"statuses": [*desired["statuses"], status("legacy", "general")]})
    assert back.json()["restored"] == ["legacy"]


async def test_bulk_sync_rejects_an_incoherent_list(acme: httpx.AsyncClient) -> None:
    twice = await acme.put("/v1/statuses", json={"statuses": [PAID, PAID]})
    assert twice.status_code == 422 and "paid" in twice.json()["errors"][0]["message"]
    dangling = await acme.put("/v1/statuses", json={"statuses": [status("shipped", allowed_next=["nowhere"])]})
    assert dangling.status_code == 422
    await acme.post("/v1/statuses", json=PAID)
    retyped = await acme.put("/v1/statuses", json={"statuses": [status("paid", "general")]})
    assert retyped.status_code == 422 and "immutable" in retyped.json()["errors"][0]["message"]


async def test_health_readiness_metrics_and_docs(acme: httpx.AsyncClient) -> None:
    assert (await acme.get("/healthz")).json() == {"status": "ok"}
    ready = await acme.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {
        "database": True,
        "broker": True,
        "revoked_clients": True,
    }
    await acme.get("/v1/statuses")
    metrics = await acme.get("/metrics")
    assert metrics.status_code == 200 and "http_requests_total" in metrics.text
    assert (await acme.get("/openapi.json")).json()["info"]["title"] == "Status registry"
