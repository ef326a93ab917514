"""Backwards-compatibility check between two JSON Schemas of one contract (old = published, new = code).

A change is breaking when a reader built from one schema can reject, or misread, a message written against
the other: consumers upgrade at their own pace, so both directions matter. Reported:

* ``property_removed``: a property of the old schema is gone (old readers may need it);
* ``type_changed``: different `type` or `format`, a `$ref` to a differently shaped definition, an `anyOf`
  member (for example ``null``) added or removed, or a `$ref` replaced by a primitive;
* ``enum_narrowed`` / ``enum_widened``: `enum`/`const` values removed (old messages become invalid) or added
  (old readers validate enums strictly and would reject the new value);
* ``new_required``: a property is required now that was absent or optional (old messages lack it);
* ``no_longer_required``: a required property became optional (new writers may omit it, old readers need it);
* ``constraint_changed``: a validation keyword (pattern, min/max length, bounds...) changed in either direction.

Not breaking: a new optional property, changed titles, descriptions, defaults or `$defs` names. `$ref`s are
followed into each schema's own `$defs` and compared structurally (cycles are cut). Keywords pydantic does not
emit (`not`, `if`/`then`, `dependentRequired`, `patternProperties`...) are not analysed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

Schema = Mapping[str, Any]

CONSTRAINT_KEYWORDS = (
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
)


class ProblemKind(StrEnum):
    PROPERTY_REMOVED = "property_removed"
    TYPE_CHANGED = "type_changed"
    ENUM_NARROWED = "enum_narrowed"
    ENUM_WIDENED = "enum_widened"
    NEW_REQUIRED = "new_required"
    NO_LONGER_REQUIRED = "no_longer_required"
    CONSTRAINT_CHANGED = "constraint_changed"


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} [{self.kind}]"


def find_breaking_changes(old: Schema, new: Schema) -> list[Problem]:
    """Every breaking difference from `old` to `new`, with the JSON path of the value it concerns."""
    checker = _Checker(old, new)
    checker.compare(old, new, "$")
    return checker.problems


def is_compatible(old: Schema, new: Schema) -> bool:
    return not find_breaking_changes(old, new)


class _Checker:
    def __init__(self, old_root: Schema, new_root: Schema) -> None:
        self.old_root = old_root
        self.new_root = new_root
        self.problems: list[Problem] = []
        self._compared_refs: set[tuple[str, str]] = set()

    def report(self, kind: ProblemKind, path: str, message: str) -> None:
        self.problems.append(Problem(kind, path, message))

    def compare(self, old: Schema, new: Schema, path: str) -> None:
        old, old_ref = _resolve(self.old_root, old)
        new, new_ref = _resolve(self.new_root, new)
        if old_ref is not None and new_ref is not None:
            if (old_ref, new_ref) in self._compared_refs:
                return
            self._compared_refs.add((old_ref, new_ref))
        old_alts = _alternatives(self.old_root, old)
        new_alts = _alternatives(self.new_root, new)
        if len(old_alts) == 1 and len(new_alts) == 1:
            if old_alts[0] is old and new_alts[0] is new:
                self._compare_single(old, new, path)
            else:
                self.compare(old_alts[0], new_alts[0], path)
            return
        self._compare_alternatives(old_alts, new_alts, path)

    def _compare_alternatives(self, old_alts: list[Schema], new_alts: list[Schema], path: str) -> None:
        new_by_kind: dict[str, list[Schema]] = {}
        for alt in new_alts:
            new_by_kind.setdefault(_kind(_resolve(self.new_root, alt)[0]), []).append(alt)
        for alt in old_alts:
            kind = _kind(_resolve(self.old_root, alt)[0])
            candidates = new_by_kind.get(kind)
            if not candidates:
                self.report(ProblemKind.TYPE_CHANGED, path, f"no longer accepts {kind}")
                continue
            self.compare(alt, candidates.pop(0), path)
        for kind, left in new_by_kind.items():
            for _ in left:
                self.report(ProblemKind.TYPE_CHANGED, path, f"now also allows {kind} (old readers reject it)")

    def _compare_single(self, old: Schema, new: Schema, path: str) -> None:
        old_kind, new_kind = _kind(old), _kind(new)
        if old_kind != new_kind:
            self.report(ProblemKind.TYPE_CHANGED, path, f"type changed from {old_kind} to {new_kind}")
            return
        if old.get("format") != new.get("format"):
            self.report(
                ProblemKind.TYPE_CHANGED, path, f"format changed from {old.get('format')} to {new.get('format')}"
            )
        self._compare_enum(old, new, path)
        for keyword in CONSTRAINT_KEYWORDS:
            if old.get(keyword) != new.get(keyword):
                self.report(
                    ProblemKind.CONSTRAINT_CHANGED,
                    path,
                    f"{keyword} changed from {old.get(keyword)!r} to {new.get(keyword)!r}",
                )
        if old_kind == "object":
            self._compare_object(old, new, path)
        elif old_kind == "array":
            self._compare_sub(old, new, "items", f"{path}[*]")

    def _compare_enum(self, old: Schema, new: Schema, path: str) -> None:
        old_values, new_values = _enum_values(old), _enum_values(new)
        if old_values == new_values:
            return
        if new_values is None:
            self.report(ProblemKind.ENUM_WIDENED, path, "no longer restricted to an enum")
            return
        if old_values is None:
            self.report(ProblemKind.ENUM_NARROWED, path, f"now restricted to {sorted(new_values)}")
            return
        if removed := old_values - new_values:
            self.report(ProblemKind.ENUM_NARROWED, path, f"values removed: {sorted(removed)}")
        if added := new_values - old_values:
            self.report(ProblemKind.ENUM_WIDENED, path, f"values added: {sorted(added)}")

    def _compare_object(self, old: Schema, new: Schema, path: str) -> None:
        old_props: Mapping[str, Schema] = old.get("properties", {})
        new_props: Mapping[str, Schema] = new.get("properties", {})
        for name, old_prop in old_props.items():
            if name not in new_props:
                self.report(ProblemKind.PROPERTY_REMOVED, f"{path}.{name}", "property removed")
            else:
                self.compare(old_prop, new_props[name], f"{path}.{name}")
        old_required, new_required = set(old.get("required", ())), set(new.get("required", ()))
        for name in sorted(new_required - old_required):
            what = "optional property became required" if name in old_props else "new required property"
            self.report(ProblemKind.NEW_REQUIRED, f"{path}.{name}", what)
        for name in sorted((old_required - new_required) & set(new_props)):
            self.report(ProblemKind.NO_LONGER_REQUIRED, f"{path}.{name}", "required property became optional")
        self._compare_sub(old, new, "additionalProperties", f"{path}.*")
        self._compare_sub(old, new, "propertyNames", f"{path}.<key>")

    def _compare_sub(self, old: Schema, new: Schema, keyword: str, path: str) -> None:
        old_sub, new_sub = old.get(keyword), new.get(keyword)
        if isinstance(old_sub, Mapping) and isinstance(new_sub, Mapping):
            self.compare(old_sub, new_sub, path)
        elif old_sub != new_sub:
            self.report(ProblemKind.TYPE_CHANGED, path, f"{keyword} changed from {old_sub!r} to {new_sub!r}")


def _resolve(root: Schema, node: Schema) -> tuple[Schema, str | None]:
    """Follow `$ref` (and single-member `allOf`) to the definition; sibling keywords are kept."""
    ref_name: str | None = None
    for _ in range(64):
        if "$ref" in node:
            ref = node["$ref"]
            target = _lookup(root, ref)
            ref_name = ref
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        elif isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1:
            node = {**node["allOf"][0], **{k: v for k, v in node.items() if k != "allOf"}}
        else:
            return node, ref_name
    raise ValueError(f"$ref chain too deep at {ref_name}")


def _lookup(root: Schema, ref: str) -> Schema:
    if not ref.startswith("#"):
        raise ValueError(f"only local $refs are supported, got {ref!r}")
    node: Any = root
    for part in ref[1:].split("/")[1:] if ref != "#" else []:
        node = node[part.replace("~1", "/").replace("~0", "~")]
    if not isinstance(node, Mapping):
        raise ValueError(f"$ref {ref!r} does not point to a schema")
    return node


def _alternatives(root: Schema, node: Schema) -> list[Schema]:
    """The members of a union (`anyOf`/`oneOf`, or a list-valued `type`), flattened; [node] otherwise.

    Members stay unresolved (`$ref`s are kept) so that `compare` can cut recursive definitions.
    """
    for keyword in ("anyOf", "oneOf"):
        members = node.get(keyword)
        if isinstance(members, list):
            out: list[Schema] = []
            for member in members:
                resolved, _ = _resolve(root, member)
                if _is_union(resolved):
                    out.extend(_alternatives(root, resolved))
                else:
                    out.append(member)
            return out
    types = node.get("type")
    if isinstance(types, list):
        return [{**node, "type": one} for one in types]
    return [node]


def _is_union(node: Schema) -> bool:
    return any(isinstance(node.get(k), list) for k in ("anyOf", "oneOf", "type"))


def _kind(node: Schema) -> str:
    types = node.get("type")
    if isinstance(types, str):
        return types
    if "properties" in node:
        return "object"
    if "const" in node or "enum" in node:
        return "enum"
    return "any"


def _enum_values(node: Schema) -> set[str] | None:
    if "const" in node:
        return {json.dumps(node["const"], sort_keys=True)}
    if isinstance(node.get("enum"), list):
        return {json.dumps(value, sort_keys=True) for value in node["enum"]}
    return None
