"""The evolution rule: a published contract changes only compatibly, or it gets a new version.

Compares the schemas of the last release (``schemas/released/``, written only by ``make schemas-release``) with
what the code produces now. A breaking change (see `contracts.compat`) to an event type whose `SCHEMA_VERSION`
was not bumped relative to the released index is a failure. The way out is a new ``.vN`` event type (and topic)
beside the old one, or a compatible change (for example an optional field).

The baseline is the release, not the regenerated ``schemas/`` beside the code: a breaking change committed
together with its regenerated schemas would compare equal to them and pass.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contracts.compat import Problem, find_breaking_changes
from contracts.registry import ContractSpec
from contracts.schema_files import INDEX_FILE, contract_schema

BUMP_ADVICE = "bump SCHEMA_VERSION and publish a new .vN type/topic, or make the change compatible"
REGENERATE_ADVICE = "run `make schemas` (python -m contracts.schema_export) and commit the result"
RELEASE_ADVICE = "run `make schemas-release` (python -m contracts.schema_export --release) and commit the result"


@dataclass(frozen=True)
class Baseline:
    """Released schemas: the index (event type -> entry) and each entry's schema by event type."""

    index: Mapping[str, Mapping[str, Any]]
    schemas: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_directory(cls, directory: Path) -> Baseline:
        index_path = directory / INDEX_FILE
        if not index_path.is_file():
            return cls(index={})
        index: dict[str, dict[str, Any]] = json.loads(index_path.read_text(encoding="utf-8"))
        schemas = {}
        for event_type, entry in index.items():
            path = directory / str(entry["file"])
            if path.is_file():
                schemas[event_type] = json.loads(path.read_text(encoding="utf-8"))
        return cls(index=index, schemas=schemas)


def unversioned_breaking_changes(spec: ContractSpec, baseline: Baseline) -> list[Problem]:
    """Breaking changes of `spec` since the baseline, unless its SCHEMA_VERSION was bumped since."""
    entry = baseline.index.get(spec.event_type)
    published = baseline.schemas.get(spec.event_type)
    if entry is None or published is None:
        return []  # never published: nobody depends on it yet
    if spec.schema_version > int(entry["schema_version"]):
        return []
    return find_breaking_changes(published, contract_schema(spec))


def evolution_failures(specs: Iterable[ContractSpec], baseline: Baseline) -> list[str]:
    """One message per contract changed incompatibly without a version bump (empty: all is well)."""
    failures = []
    for spec in specs:
        problems = unversioned_breaking_changes(spec, baseline)
        if problems:
            lines = "\n".join(f"  - {problem}" for problem in problems)
            failures.append(
                f"{spec.event_type} ({spec.model.__name__}, SCHEMA_VERSION {spec.schema_version}) changed "
                f"incompatibly since the released schema:\n{lines}\n  -> {BUMP_ADVICE}"
            )
    return failures
