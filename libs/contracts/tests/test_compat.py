from __future__ import annotations

import copy
from typing import Any

import pytest

from contracts import ALL_CONTRACTS, OrderStatusReported, envelope_type
from contracts.compat import Problem, ProblemKind, find_breaking_changes, is_compatible
from contracts.registry import ContractSpec
from contracts.schema_export import contract_schema

Schema = dict[str, Any]


def _base() -> Schema:
    """A schema shaped like pydantic's output: $defs, $refs, nullable anyOf, enum, array, dict."""
    return {
        "$defs": {
            "Customer": {
                "type": "object",
                "title": "Customer",
                "properties": {
                    "id": {"type": "string", "minLength": 1},
                    "name": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
                },
                "required": ["id"],
            },
            "Kind": {"enum": ["general", "delivery", "payment"], "type": "string", "title": "Kind"},
            "Payload": {
                "type": "object",
                "properties": {
                    "order_id": {"type": "string"},
                    "kind": {"$ref": "#/$defs/Kind"},
                    "customer": {"$ref": "#/$defs/Customer"},
                    "placed_at": {"type": "string", "format": "date-time"},
                    "comment": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "names": {"type": "object", "additionalProperties": {"type": "string"}},
                },
                "required": ["order_id", "kind", "customer", "placed_at"],
            },
        },
        "type": "object",
        "properties": {"id": {"type": "string"}, "data": {"$ref": "#/$defs/Payload"}},
        "required": ["id", "data"],
    }


def _payload(schema: Schema) -> Schema:
    payload: Schema = schema["$defs"]["Payload"]
    return payload


def _problems(new: Schema) -> list[Problem]:
    return find_breaking_changes(_base(), new)


def _kinds(new: Schema) -> set[tuple[ProblemKind, str]]:
    return {(problem.kind, problem.path) for problem in _problems(new)}


def test_identical_schemas_are_compatible() -> None:
    assert is_compatible(_base(), _base())


def test_adding_an_optional_property_is_compatible() -> None:
    new = _base()
    _payload(new)["properties"]["channel"] = {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    new["$defs"]["Customer"]["properties"]["email"] = {"type": "string", "default": ""}
    assert _problems(new) == []


def test_documentation_and_definition_names_do_not_matter() -> None:
    new = _base()
    new["$defs"]["Client"] = new["$defs"].pop("Customer")
    new["$defs"]["Client"]["title"] = "Client"
    _payload(new)["properties"]["customer"] = {"$ref": "#/$defs/Client", "description": "who ordered"}
    _payload(new)["properties"]["comment"]["default"] = "none"
    _payload(new)["description"] = "now documented"
    assert _problems(new) == []


def test_removed_property_is_detected() -> None:
    new = _base()
    del _payload(new)["properties"]["comment"]
    assert _kinds(new) == {(ProblemKind.PROPERTY_REMOVED, "$.data.comment")}


def test_removed_property_is_detected_through_refs() -> None:
    new = _base()
    del new["$defs"]["Customer"]["properties"]["name"]
    assert _kinds(new) == {(ProblemKind.PROPERTY_REMOVED, "$.data.customer.name")}


def test_changed_type_is_detected() -> None:
    new = _base()
    _payload(new)["properties"]["order_id"] = {"type": "integer"}
    problems = _problems(new)
    assert [(p.kind, p.path) for p in problems] == [(ProblemKind.TYPE_CHANGED, "$.data.order_id")]
    assert "from string to integer" in str(problems[0])
    assert str(problems[0]).startswith("$.data.order_id: ")


def test_changed_format_is_detected() -> None:
    new = _base()
    _payload(new)["properties"]["placed_at"]["format"] = "date"
    assert _kinds(new) == {(ProblemKind.TYPE_CHANGED, "$.data.placed_at")}


def test_ref_replaced_by_a_primitive_is_detected() -> None:
    new = _base()
    _payload(new)["properties"]["customer"] = {"type": "string"}
    assert _kinds(new) == {(ProblemKind.TYPE_CHANGED, "$.data.customer")}


def test_ref_to_a_differently_shaped_definition_is_detected() -> None:
    new = _base()
    new["$defs"]["Other"] = {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}
    _payload(new)["properties"]["customer"] = {"$ref": "#/$defs/Other"}
    assert _kinds(new) == {
        (ProblemKind.TYPE_CHANGED, "$.data.customer.id"),
        (ProblemKind.PROPERTY_REMOVED, "$.data.customer.name"),
    }


def test_enum_narrowing_is_detected() -> None:
    new = _base()
    new["$defs"]["Kind"]["enum"] = ["general", "delivery"]
    problems = _problems(new)
    assert [(p.kind, p.path) for p in problems] == [(ProblemKind.ENUM_NARROWED, "$.data.kind")]
    assert "payment" in problems[0].message


def test_enum_widening_is_detected() -> None:
    new = _base()
    new["$defs"]["Kind"]["enum"] = ["general", "delivery", "payment", "returns"]
    assert _kinds(new) == {(ProblemKind.ENUM_WIDENED, "$.data.kind")}


def test_a_new_required_property_is_detected() -> None:
    new = _base()
    _payload(new)["properties"]["channel"] = {"type": "string"}
    _payload(new)["required"].append("channel")
    problems = _problems(new)
    assert [(p.kind, p.path) for p in problems] == [(ProblemKind.NEW_REQUIRED, "$.data.channel")]
    assert problems[0].message == "new required property"


def test_an_optional_property_becoming_required_is_detected() -> None:
    new = _base()
    new["$defs"]["Customer"]["required"].append("name")
    assert _kinds(new) == {(ProblemKind.NEW_REQUIRED, "$.data.customer.name")}


def test_a_required_property_becoming_optional_is_detected() -> None:
    new = _base()
    _payload(new)["required"].remove("placed_at")
    assert _kinds(new) == {(ProblemKind.NO_LONGER_REQUIRED, "$.data.placed_at")}


def test_making_a_field_nullable_or_not_is_detected() -> None:
    widened = _base()
    _payload(widened)["properties"]["order_id"] = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    assert _kinds(widened) == {(ProblemKind.TYPE_CHANGED, "$.data.order_id")}
    assert "now also allows null" in str(_problems(widened)[0])

    narrowed = _base()
    _payload(narrowed)["properties"]["comment"] = {"type": "string"}
    assert _kinds(narrowed) == {(ProblemKind.TYPE_CHANGED, "$.data.comment")}
    assert "no longer accepts null" in str(_problems(narrowed)[0])


def test_list_valued_type_is_a_union() -> None:
    new = _base()
    _payload(new)["properties"]["comment"] = {"type": ["string", "null"]}
    assert _problems(new) == []


def test_array_items_and_dict_values_are_compared() -> None:
    new = _base()
    _payload(new)["properties"]["tags"]["items"] = {"type": "integer"}
    _payload(new)["properties"]["names"]["additionalProperties"] = {"type": "integer"}
    assert _kinds(new) == {
        (ProblemKind.TYPE_CHANGED, "$.data.tags[*]"),
        (ProblemKind.TYPE_CHANGED, "$.data.names.*"),
    }


def test_changed_constraints_are_detected() -> None:
    new = _base()
    new["$defs"]["Customer"]["properties"]["id"]["minLength"] = 3
    _payload(new)["properties"]["order_id"]["pattern"] = "^[0-9]+$"
    assert _kinds(new) == {
        (ProblemKind.CONSTRAINT_CHANGED, "$.data.customer.id"),
        (ProblemKind.CONSTRAINT_CHANGED, "$.data.order_id"),
    }


def test_recursive_definitions_terminate() -> None:
    tree: Schema = {
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "parent": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                },
                "required": ["name"],
            }
        },
        "$ref": "#/$defs/Node",
    }
    assert find_breaking_changes(tree, copy.deepcopy(tree)) == []
    changed = copy.deepcopy(tree)
    changed["$defs"]["Node"]["properties"]["name"] = {"type": "integer"}
    assert [(p.kind, p.path) for p in find_breaking_changes(tree, changed)] == [(ProblemKind.TYPE_CHANGED, "$.name")]


class _OrderStatusReportedWithChannel(OrderStatusReported):
    channel: str | None = None


class _OrderStatusReportedBroken(OrderStatusReported):
    code: int  # type: ignore[assignment]
    reason: str


def test_on_real_contracts() -> None:
    (published,) = [spec for spec in ALL_CONTRACTS if spec.model is OrderStatusReported]
    old = contract_schema(published)

    def schema_of(model: type[OrderStatusReported]) -> Schema:
        return contract_schema(ContractSpec(model=model, envelope=envelope_type(model)))

    assert find_breaking_changes(old, schema_of(_OrderStatusReportedWithChannel)) == []
    assert {(p.kind, p.path) for p in find_breaking_changes(old, schema_of(_OrderStatusReportedBroken))} == {
        (ProblemKind.TYPE_CHANGED, "$.data.code"),
        (ProblemKind.NEW_REQUIRED, "$.data.reason"),
    }


@pytest.mark.parametrize("spec", ALL_CONTRACTS, ids=[spec.event_type for spec in ALL_CONTRACTS])
def test_every_contract_is_compatible_with_itself(spec: ContractSpec) -> None:
    assert find_breaking_changes(contract_schema(spec), contract_schema(spec)) == []
