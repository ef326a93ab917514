"""Hostile bytes get a clear 4xx from every backend service (issue 29, items 4-11), in process.

Each service's app runs without its lifespan (no database, no broker): every refusal here happens before a route
reaches either, so a request that slipped through would meet the missing runtime and answer 500, which fails the
test as surely as the database error it would meet in production.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from campaigns.app import create_app as campaigns_app
from campaigns.settings import CampaignsSettings
from devtools.pytest_plugin import token_issuer
from notifier.app import create_app as notifier_app
from notifier.settings import NotifierSettings
from orders.app import create_app as orders_app
from orders.settings import OrdersSettings
from servicekit.errors import MAX_FIELD_ERRORS, MAX_JSON_DEPTH
from status_registry.app import create_app as registry_app
from status_registry.settings import RegistrySettings
from webhooks.app import create_app as webhooks_app
from webhooks.settings import WebhooksSettings

APPS: dict[str, Callable[[], FastAPI]] = {
    "status-registry": lambda: registry_app(RegistrySettings()),
    "orders": lambda: orders_app(OrdersSettings()),
    "campaigns": lambda: campaigns_app(CampaignsSettings()),
    "notifier": lambda: notifier_app(NotifierSettings()),
    "webhooks": lambda: webhooks_app(WebhooksSettings()),
}
BODY_METHODS = ("post", "put", "patch")
JSON = {"Content-Type": "application/json"}


def body_routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, path) of every operation that takes a body (the notifier's webhooks read theirs raw), with `x` for
    each path parameter."""
    for path, item in app.openapi()["paths"].items():
        for method in item:
            if method in BODY_METHODS:
                yield method.upper(), _concrete(path)


def _concrete(path: str) -> str:
    parts = ["x" if part.startswith("{") else part for part in path.split("/")]
    return "/".join(parts)


@pytest.fixture(params=sorted(APPS))
async def service(request: pytest.FixtureRequest) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = APPS[request.param]()
    async with _client(app) as client:
        yield app, client


def _client(app: FastAPI) -> httpx.AsyncClient:
    token = token_issuer().token("acme", ("read", "write"))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test", headers={"Authorization": f"Bearer {token}"})


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json", response.text
    body: dict[str, Any] = json.loads(response.content.decode("utf-8"))  # strict UTF-8: valid JSON text
    assert body["status"] == status and body["code"] == code, body
    return body


# --- item 4: a lone surrogate in a JSON key -----------------------------------------------------------------------


async def test_a_lone_surrogate_in_a_key_is_a_422_naming_it_on_every_body_route(
    service: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """It answered 500 on every body route, before authentication: describing the refusal failed to encode."""
    app, client = service
    routes = list(body_routes(app))
    assert routes
    for method, path in routes:
        for headers in ({}, {"Authorization": ""}):  # with a token and without one: refused before authentication
            answer = await client.request(method, path, content=b'{"\\ud800": 1}', headers={**JSON, **headers})
            (error,) = problem(answer, 422, "validation_failed")["errors"]
            assert (error["location"], error["field"], error["type"]) == ("body", "\\ud800", "forbidden_character")


# --- item 5: JSON is UTF-8 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-32-le"])
async def test_a_body_in_another_encoding_than_utf8_is_a_415_on_every_body_route(
    service: tuple[FastAPI, httpx.AsyncClient], encoding: str
) -> None:
    """Python's parser decodes UTF-16 and UTF-32 by itself, so their NUL escapes passed the (UTF-8) byte check and
    reached PostgreSQL (500) or, in the campaign preview, came back in a 200."""
    app, client = service
    text = '{"name": "A\\u0000", "code": "a", "template": "Hi\\u0000", "to": "paid", "text": "\\u0000"}'
    for method, path in body_routes(app):
        answer = await client.request(method, path, content=text.encode(encoding), headers=JSON)
        problem(answer, 415, "not_utf8")


async def test_invalid_utf8_and_a_declared_charset_other_than_utf8_are_415s() -> None:
    async with _client(APPS["campaigns"]()) as client:
        invalid = await client.post("/v1/campaigns/preview", content=b'{"to": "\xed\xa0\x80"}', headers=JSON)
        problem(invalid, 415, "not_utf8")
        declared = {"Content-Type": "application/json; charset=utf-16"}
        problem(await client.post("/v1/campaigns/preview", content=b"{}", headers=declared), 415, "not_utf8")
        utf8 = {"Content-Type": 'application/json; charset="UTF-8"'}
        problem(await client.post("/v1/campaigns/preview", content=b"{}", headers=utf8), 422, "validation_failed")


# --- item 6: the size, the depth and the documents -----------------------------------------------------------------


async def test_a_chunked_body_over_the_limit_is_a_413() -> None:
    """It was a 400: the limit raised inside FastAPI's body reading, which reports any failure there as a 400."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    async with _client(APPS["status-registry"]()) as client:
        answer = await client.post("/v1/statuses", content=chunks(), headers=JSON)
        problem(answer, 413, "payload_too_large")


async def test_json_nested_too_deep_is_a_400_json_too_deep() -> None:
    async with _client(APPS["orders"]()) as client:
        deep = b"[" * 990 + b"]" * 990
        problem(await client.put("/v1/orders/o-1", content=deep, headers=JSON), 400, "json_too_deep")
        brackets_in_a_string = json.dumps({"customer": {"id": "[" * 1000}}).encode()
        shallow = await client.put("/v1/orders/o-1", content=brackets_in_a_string, headers=JSON)
        problem(shallow, 422, "validation_failed")  # no depth to speak of: validated (and refused) as usual
        at_the_limit = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
        problem(await client.put("/v1/orders/o-1", content=at_the_limit, headers=JSON), 422, "validation_failed")


def test_every_body_operation_documents_400_413_and_415_as_problems() -> None:
    for name, make in APPS.items():
        app = make()
        for path, item in app.openapi()["paths"].items():
            for method, operation in item.items():
                if method in BODY_METHODS:
                    documented = operation["responses"]
                    assert {"400", "413", "415"} <= documented.keys(), (name, method, path)
                    assert "not_utf8" in documented["415"]["description"]
                    assert "json_too_deep" in documented["400"]["description"]


# --- item 7: a path or a query that is not UTF-8 -------------------------------------------------------------------


async def test_percent_escapes_that_are_not_utf8_are_422s_naming_the_parameter() -> None:
    """`PUT /v1/orders/%ED%A0%80` created an order named "\\ufffd\\ufffd\\ufffd"."""
    async with _client(APPS["orders"]()) as client:
        body = {"customer": {"id": "c-1"}, "amount": "1", "currency": "RUB", "placed_at": "2026-01-01T00:00:00Z"}
        answer = await client.put("/v1/orders/%ED%A0%80", json=body)
        (error,) = problem(answer, 422, "validation_failed")["errors"]
        assert (error["location"], error["field"], error["type"]) == ("path", "order_id", "forbidden_character")
        listed = await client.get("/v1/orders?customer_id=%FF%FE")
        (error,) = problem(listed, 422, "validation_failed")["errors"]
        assert (error["location"], error["field"], error["type"]) == ("query", "customer_id", "forbidden_character")


# --- item 8: numbers are no instants --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("orders", "/v1/orders?updated_to=0.5"),
        ("orders", "/v1/orders?updated_from=1700000000"),
        ("orders", "/v1/analytics/status-counts?type=general&from=0.5"),
        ("orders", "/v1/segments/customers?status=paid&to=1e9"),
        ("campaigns", "/v1/campaigns/x/stats?since=0.5"),
        ("campaigns", "/v1/campaigns/stats?campaign_id=x&since=-1"),
    ],
)
async def test_a_number_is_no_instant(name: str, path: str) -> None:
    """pydantic's lax mode read them as seconds since 1970."""
    async with _client(APPS[name]()) as client:
        (error,) = problem(await client.get(path), 422, "validation_failed")["errors"]
        assert error["location"] == "query" and "not a number" in error["message"]


async def test_a_number_is_no_instant_in_a_body_either() -> None:
    async with _client(APPS["orders"]()) as client:
        for placed_at in (0.5, "1700000000"):
            body = {"customer": {"id": "c-1"}, "amount": "1", "currency": "RUB", "placed_at": placed_at}
            (error,) = problem(await client.put("/v1/orders/o-1", json=body), 422, "validation_failed")["errors"]
            assert error["field"] == "placed_at"


# --- item 9: bounded arrays, bounded error lists --------------------------------------------------------------------


def test_every_array_and_map_of_every_request_schema_is_bounded() -> None:
    for name, make in APPS.items():
        document = make().openapi()
        unbounded = sorted(set(_unbounded(document)))
        assert not unbounded, (name, unbounded)


def _unbounded(document: dict[str, Any]) -> Iterator[str]:
    components = document["components"]["schemas"]
    seen: set[str] = set()

    def walk(schema: dict[str, Any], where: str) -> Iterator[str]:
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            if name not in seen:
                seen.add(name)
                yield from walk(components[name], name)
            return
        if schema.get("type") == "array" and "maxItems" not in schema:
            yield where
        if schema.get("type") == "object" and "patternProperties" in schema and "maxProperties" not in schema:
            yield where
        for key, value in schema.get("properties", {}).items():
            yield from walk(value, f"{where}.{key}")
        for value in [schema.get("items"), *schema.get("patternProperties", {}).values()]:
            if isinstance(value, dict):
                yield from walk(value, f"{where}[]")
        for key in ("anyOf", "oneOf", "allOf"):
            for value in schema.get(key, []):
                yield from walk(value, where)

    for path, item in document["paths"].items():
        for method, operation in item.items():
            for content in operation.get("requestBody", {}).get("content", {}).values():
                yield from walk(content["schema"], f"{method} {path}")
            for parameter in operation.get("parameters", []):
                yield from walk(parameter["schema"], f"{method} {path} {parameter['name']}")


async def test_ten_thousand_items_earn_a_small_422() -> None:
    """20 KB of `allowed_next` earned a 1.1 MB answer listing 10,000 errors."""
    status = {"code": "a", "name": "A", "type": "general", "allowed_next": ["b!"] * 10_000}
    async with _client(APPS["status-registry"]()) as client:
        answer = await client.put("/v1/statuses", json={"statuses": [status]})
        body = problem(answer, 422, "validation_failed")
        assert len(answer.content) < 2_000
        assert [e["type"] for e in body["errors"]] == ["too_long"]


async def test_an_error_list_holds_the_first_errors_and_says_how_many_there_were() -> None:
    statuses = [{"code": f"s{i}", "type": "general"} for i in range(3 * MAX_FIELD_ERRORS)]  # each lacks its name
    async with _client(APPS["status-registry"]()) as client:
        body = problem(await client.put("/v1/statuses", json={"statuses": statuses}), 422, "validation_failed")
    assert len(body["errors"]) == MAX_FIELD_ERRORS and body["error_count"] == 3 * MAX_FIELD_ERRORS
    assert body["errors"][0]["field"] == "statuses.0.name"


# --- item 10: names of one line -------------------------------------------------------------------------------------

NOT_ONE_LINE = ["A\x1fB", "A\rB", "A\vB", "A\x85B", "A\u2028B", "A\u2029B", "A\tB", "\x1fA", "A\x7f"]


@pytest.mark.parametrize("name", NOT_ONE_LINE)
async def test_a_name_of_one_line_holds_no_control_character_nor_line_separator(name: str) -> None:
    refusals = []
    async with _client(APPS["status-registry"]()) as registry:
        refusals.append(await registry.post("/v1/statuses", json={"code": "a", "name": name, "type": "general"}))
        localized = {"code": "a", "name": "A", "type": "general", "localized_names": {"en": name}}
        refusals.append(await registry.post("/v1/statuses", json=localized))
        refusals.append(await registry.patch("/v1/statuses/a", json={"name": name}, headers={"If-Match": '"1"'}))
    async with _client(APPS["campaigns"]()) as campaigns:
        campaign = {"name": name, "trigger": {"status_type": "payment", "to": "paid"}, "template": "Hi"}
        refusals.append(await campaigns.post("/v1/campaigns", json=campaign))
    async with _client(APPS["orders"]()) as orders:
        order = {"customer": {"id": "c-1", "name": name}, "amount": "1", "currency": "RUB",
                 "placed_at": "2026-01-01T00:00:00Z"}  # fmt: skip
        refusals.append(await orders.put("/v1/orders/o-1", json=order))
    for answer in refusals:
        (error,) = problem(answer, 422, "validation_failed")["errors"]
        assert error["field"].endswith(("name", "name.en", "names.en", "customer")), error


def test_the_documents_say_names_are_one_line() -> None:
    registry = APPS["status-registry"]().openapi()["components"]["schemas"]
    campaigns = APPS["campaigns"]().openapi()["components"]["schemas"]
    for pattern in (registry["NewStatus"]["properties"]["name"]["pattern"],
                    campaigns["CampaignDefinition"]["properties"]["name"]["pattern"]):  # fmt: skip
        assert "\\x00-\\x1f" in pattern and "\\u2028" in pattern and "\\s" not in pattern and "\\S" not in pattern


# --- item 11: methods ------------------------------------------------------------------------------------------------


async def test_a_405_lists_every_method_of_the_path(service: tuple[FastAPI, httpx.AsyncClient]) -> None:
    """Starlette's router named only the first route of the path: `Allow: POST` for /v1/statuses."""
    app, client = service
    for path, item in app.openapi()["paths"].items():
        declared = {method.upper() for method in item}
        refused = sorted({"GET", "POST", "PUT", "PATCH", "DELETE"} - declared)
        if not refused:
            continue
        answer = await client.request(refused[0], _concrete(path), headers=JSON)
        problem(answer, 405, "method_not_allowed")
        assert set(answer.headers["allow"].split(", ")) == declared, path


async def test_the_campaigns_own_words_are_no_campaign_ids() -> None:
    """`/v1/campaigns/preview` was taken for the campaign "preview" by the `{campaign_id}` routes."""
    async with _client(APPS["campaigns"]()) as client:
        for method in ("GET", "PUT", "DELETE", "PATCH"):
            answer = await client.request(method, "/v1/campaigns/preview", json={})
            problem(answer, 405, "method_not_allowed")
            assert answer.headers["allow"] == "POST"
        for method in ("PUT", "DELETE", "POST"):
            answer = await client.request(method, "/v1/campaigns/stats", json={})
            problem(answer, 405, "method_not_allowed")
            assert answer.headers["allow"] == "GET"
