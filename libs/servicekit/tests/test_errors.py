"""The one error model: every error of a servicekit app is a problem (RFC 9457), and the OpenAPI says so."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Header, Query
from pydantic import BaseModel, ConfigDict

from devtools.pytest_plugin import token_issuer
from servicekit.app import token_verifier
from servicekit.auth import OrdersReader, OrdersWriter
from servicekit.errors import (
    Conflict,
    NotFound,
    document_errors,
    install_error_handlers,
    problems,
)
from servicekit.http import install_plumbing, version_from_if_match
from servicekit.settings import ServiceSettings

PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}


class Thing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    size: int


def make_app() -> FastAPI:
    app = FastAPI()
    app.state.settings = ServiceSettings()
    app.state.token_verifier = token_verifier(app.state.settings)
    install_error_handlers(app)
    document_errors(app)

    @app.get("/things/{name}", responses=problems(404))
    async def get_thing(name: str, who: OrdersReader, limit: Annotated[int, Query(ge=1)] = 1) -> dict[str, str]:
        raise NotFound(f"no thing '{name}'")

    @app.put("/things/{name}", responses=problems(409, 412, 428))
    async def put_thing(
        name: str, thing: Thing, who: OrdersWriter, if_match: Annotated[str | None, Header()] = None
    ) -> Thing:
        version_from_if_match(if_match, required=True)
        raise Conflict("in use", code="thing_in_use", users=[{"id": "u-1"}])

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals: password=hunter2")

    async def ok() -> bool:
        return True

    install_plumbing(app, max_body_bytes=100, checks={"ok": ok})
    return app


@pytest.fixture
async def client() -> Any:
    app = make_app()
    token = token_issuer().token("acme", ("read",))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers={"Authorization": f"Bearer {token}"}
    ) as client:
        yield client


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body.keys() >= PROBLEM_KEYS
    assert body["status"] == status and body["code"] == code and body["type"] == "about:blank"
    assert isinstance(body["detail"], str) and body["title"]
    return body


async def test_domain_errors_are_problems_with_their_code_and_extensions(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/things/x"), 404, "not_found")
    assert body["detail"] == "no thing 'x'" and "errors" not in body
    writer = token_issuer().token("acme", ("read", "write"))
    conflict = await client.put(
        "/things/x", json={"name": "x", "size": 1}, headers={"Authorization": f"Bearer {writer}", "If-Match": '"1"'}
    )
    assert assert_problem(conflict, 409, "thing_in_use")["users"] == [{"id": "u-1"}]
    required = await client.put(
        "/things/x", json={"name": "x", "size": 1}, headers={"Authorization": f"Bearer {writer}"}
    )
    assert_problem(required, 428, "precondition_required")
    wrong = await client.put(
        "/things/x", json={"name": "x", "size": 1}, headers={"Authorization": f"Bearer {writer}", "If-Match": "nope"}
    )
    assert_problem(wrong, 412, "version_mismatch")
    anything = await client.put(
        "/things/x", json={"name": "x", "size": 1}, headers={"Authorization": f"Bearer {writer}", "If-Match": "*"}
    )
    assert_problem(anything, 409, "thing_in_use")  # `*` matches any current version (RFC 9110): no 412


def test_if_match_star_names_no_version_to_check() -> None:
    assert version_from_if_match("*", required=True) is None
    assert version_from_if_match('"3"', required=True) == 3


async def test_validation_errors_name_location_and_field(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/things/x?limit=0"), 422, "validation_failed")
    assert body["errors"] == [
        {"location": "query", "field": "limit", "message": "Input should be greater than or equal to 1",
         "type": "greater_than_equal"}
    ]  # fmt: skip
    writer = token_issuer().token("acme", ("read", "write"))
    bad = await client.put(
        "/things/x", json={"name": "x", "size": "big", "colour": 1}, headers={"Authorization": f"Bearer {writer}"}
    )
    errors = assert_problem(bad, 422, "validation_failed")["errors"]
    assert {(e["location"], e["field"], e["type"]) for e in errors} == {
        ("body", "size", "int_parsing"),
        ("body", "colour", "extra_forbidden"),
    }


async def test_auth_limits_and_unknown_routes_are_problems(client: httpx.AsyncClient) -> None:
    missing = await client.get("/things/x", headers={"Authorization": ""})
    assert assert_problem(missing, 401, "unauthorized") and missing.headers["www-authenticate"] == "Bearer"
    assert_problem(await client.get("/things/x", headers={"Authorization": "Bearer nope"}), 401, "unauthorized")
    forbidden = await client.put("/things/x", json={"name": "x", "size": 1})
    assert "write" in assert_problem(forbidden, 403, "insufficient_scope")["detail"]
    assert_problem(await client.put("/things/x", content=b"x" * 200), 413, "payload_too_large")
    assert_problem(
        await client.put("/things/x", content=b"a=b", headers={"Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    assert_problem(await client.get("/nowhere"), 404, "not_found")
    assert_problem(await client.delete("/things/x"), 405, "method_not_allowed")


async def test_an_unexpected_error_is_a_500_problem_without_internals(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/boom"), 500, "internal_error")
    assert "hunter2" not in str(body) and "RuntimeError" not in str(body)


def test_the_openapi_documents_every_error_as_a_problem() -> None:
    schema = make_app().openapi()
    components = schema["components"]["schemas"]
    assert "HTTPValidationError" not in components and {"Problem", "FieldError"} <= components.keys()
    get_responses = schema["paths"]["/things/{name}"]["get"]["responses"]
    put_responses = schema["paths"]["/things/{name}"]["put"]["responses"]
    assert set(get_responses) == {"200", "401", "403", "404", "422", "500"}
    assert set(put_responses) == {"200", "400", "401", "403", "409", "412", "413", "415", "422", "428", "500"}
    for status, response in put_responses.items():
        if status != "200":
            assert response["content"] == {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            }
