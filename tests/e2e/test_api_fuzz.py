"""Property-based fuzzing of every service's HTTP API against its own OpenAPI document (schemathesis).

The six services run as processes on real Kafka and PostgreSQL (the `platform` fixture). For each operation of
each service, schema-valid requests are generated (derandomized, so a run is repeatable) and sent with a valid
partner token; every answer must pass:

* `not_a_server_error`: no 5xx;
* `status_code_conformance`, `content_type_conformance`, `response_schema_conformance`: the status, the media
  type and the body are the ones the document declares for that operation (so every 4xx a route returns is
  documented, as a problem);
* `schema_valid_requests_validate` (ours, in place of schemathesis' `positive_data_acceptance`): a request the
  document says is valid is never refused as *invalid*: no 400/413/415, and no 422 whose field errors come from
  request validation. Domain refusals of a valid request stay allowed (docs/api-errors.md lists them): 404 for
  what does not exist, 409/412/428 for state and versions, and 422s whose errors carry a rule's type (an unknown
  status code, a broken template, a phone that is not a mobile number). schemathesis' own check counts every
  4xx but 401/403/404 as a rejection, which would flag those legitimate rule refusals.

Then schema-*invalid* requests (schemathesis' negative mode: a wrong type, a number where an instant belongs, a
missing field, a broken pattern...), fewer per operation: each must be refused with a documented 4xx problem
(`negative_data_rejection`, or a 413 for a body over the limit: `invalid_requests_are_refused`) and never a 5xx.
That finds what validation lets through, such as `updated_to=0.5` read as half a second after 1970.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.result import Err

from devtools.platform import SERVICES, Platform

EXAMPLES_PER_OPERATION = 25
NEGATIVE_EXAMPLES_PER_OPERATION = 10
# The error types of refusals by a rule of the domain (not by the request schema): see docs/api-errors.md.
DOMAIN_ERROR_TYPES = frozenset(
    {
        "rule_violation",
        "malformed",
        "invalid_phone",
        "malformed_report",
        "unknown_status",
        "archived_status",
        "transition_not_allowed",
        "not_initial_status",
        "wrong_status_type",
        "not_in_analytics",
        "reversed_range",  # an analytics period whose last day is before its first (orders)
        "range_too_long",  # an analytics period of more than 366 days (orders)
        "invalid_cursor",
        "in_past",  # an API client's expiry must be in the future (identity)
        # NUL and unpaired surrogates (contracts.text): any string of the schema admits them, PostgreSQL does not.
        "forbidden_character",
        # A pydantic validator's refusal: a rule across fields (an 'eq' filter takes one code, an amount filter
        # needs min or max) or a range (an instant between the years 1900 and 9000) that the schema cannot state.
        "value_error",
    }
)
REFUSED_AS_INVALID = frozenset({400, 413, 415})


@schemathesis.check
def schema_valid_requests_validate(ctx: Any, response: Any, case: Any) -> bool | None:
    """A request generated from the document is never refused as malformed by the service."""
    if response.status_code in REFUSED_AS_INVALID:
        raise AssertionError(f"a schema-valid request was refused with {response.status_code}: {response.text}")
    if response.status_code == 422:
        problem = response.json()
        schema_errors = [e for e in problem.get("errors") or () if not _allowed(e)]
        if problem.get("code") == "validation_failed" and schema_errors:
            raise AssertionError(f"a schema-valid request failed validation: {schema_errors}")
    return None


def _allowed(error: dict[str, Any]) -> bool:
    return error.get("type") in DOMAIN_ERROR_TYPES


@schemathesis.check
def invalid_requests_are_refused(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis' `negative_data_rejection`, with 413 a refusal too: an invalid body made longer than its
    maxLength can outgrow the services' body limit (64 KiB), which refuses it before validation does (found when a
    description of escaped surrogates passed 64 KiB)."""
    if response.status_code == 413:
        return None
    refused: bool | None = negative_data_rejection(ctx, response, case)
    return refused


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    schema_valid_requests_validate,
]
NEGATIVE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    invalid_requests_are_refused,
]


def fuzz(document: dict[str, Any], base_url: str, token: str) -> tuple[list[str], list[str]]:
    """Fuzz every operation of one service; returns the operations fuzzed and the failures found."""
    schema = schemathesis.openapi.from_dict(document)
    fuzzed, failures = [], []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            failures.append(f"an operation the document does not define well: {result.err()}")
            continue
        operation = result.ok()
        for mode, examples, checks in (
            (GenerationMode.POSITIVE, EXAMPLES_PER_OPERATION, CHECKS),
            (GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES_PER_OPERATION, NEGATIVE_CHECKS),
        ):
            try:
                _run(operation, mode, examples, checks, base_url, token)
            except Unsatisfiable:  # no parameter and no body (/healthz): there is no invalid request to make
                assert mode is GenerationMode.NEGATIVE, operation.label
            except (AssertionError, BaseExceptionGroup) as exc:  # every operation is fuzzed; all failures reported
                failures.append(f"{operation.label} ({mode.value}): {exc!s:.1500}")
        fuzzed.append(operation.label)
    return fuzzed, failures


def _run(operation: Any, mode: GenerationMode, examples: int, checks: list[Any], base_url: str, token: str) -> None:
    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        case.call_and_validate(base_url=base_url, headers=authorization(case, token), checks=checks)

    run()


def authorization(case: Any, token: str) -> dict[str, str]:
    """The partner token, unless the case is invalid for lacking it: negative mode removes the Authorization
    header as one of its mutations, and putting it back made such a case valid but for an unknown query
    parameter, which every service ignores (a 200 that `negative_data_rejection` took for invalid data accepted)."""
    header = case.meta.components.get(ParameterLocation.HEADER) if case.meta else None
    removed = "authorization" not in {name.lower() for name in case.headers or {}}
    return {} if header is not None and header.mode.is_negative and removed else {"Authorization": f"Bearer {token}"}


async def test_every_api_answers_schema_valid_requests_as_its_document_says(platform: Platform, summary: Any) -> None:
    token = await platform.tokens.token("fuzz")
    failures: list[str] = []
    for service in SERVICES:
        async with httpx.AsyncClient(base_url=platform.url(service)) as client:
            document = (await client.get("/openapi.json")).json()
        # schemathesis calls with `requests` (blocking): off the event loop the platform's helpers run on.
        fuzzed, found = await asyncio.to_thread(fuzz, document, platform.url(service), token)
        assert fuzzed, f"{service} has no operation to fuzz"
        failures += [f"{service} {failure}" for failure in found]
        summary(
            f"API fuzzing: {service}: {len(fuzzed)} operations x up to {EXAMPLES_PER_OPERATION} schema-valid and"
            f" {NEGATIVE_EXAMPLES_PER_OPERATION} schema-invalid requests, {len(found)} failing"
        )
    assert not failures, "\n\n".join(failures)


async def test_nul_and_unpaired_surrogates_are_422s_naming_the_field_in_every_service(platform: Platform) -> None:
    """PostgreSQL cannot store either; they answered 500 (orders, notifier) before being refused at validation."""
    refused: dict[str, httpx.Response] = {}
    async with platform.client("orders", "demo") as orders, platform.client("notifier", "demo") as notifier:
        refused["orders query"] = await orders.get("/v1/orders", params={"customer_id": "c\x00"})
        refused["orders path"] = await orders.put("/v1/orders/o%00", json={})
        body = b'{"customer": {"id": "c-1", "name": "\\ud800"}, "amount": "1", "currency": "RUB",'
        body += b' "placed_at": "2026-01-01T00:00:00Z"}'
        headers = {"Content-Type": "application/json"}
        refused["orders body"] = await orders.put("/v1/orders/o-1", content=body, headers=headers)
        refused["notifier query"] = await notifier.get("/v1/messages", params={"phone": "\x00"})
    async with platform.client("status-registry", "demo") as registry:
        body = b'{"code": "x", "name": "A\\u0000", "type": "general", "include_in_analytics": true}'
        refused["registry body"] = await registry.post("/v1/statuses", content=body, headers=headers)
    async with platform.client("campaigns", "demo") as campaigns:
        refused["campaigns path"] = await campaigns.get("/v1/campaigns/%00")

    where = {}
    for what, answer in refused.items():
        assert answer.status_code == 422, (what, answer.text)
        assert answer.headers["content-type"] == "application/problem+json", what
        (error,) = answer.json()["errors"]
        assert error["type"] == "forbidden_character", (what, error)
        where[what] = (error["location"], error["field"])
    assert where == {
        "orders query": ("query", "customer_id"),
        "orders path": ("path", "order_id"),
        "orders body": ("body", "customer.name"),
        "notifier query": ("query", "phone"),
        "registry body": ("body", "name"),
        "campaigns path": ("path", "campaign_id"),
    }
