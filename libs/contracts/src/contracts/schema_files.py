"""What the exported schema files hold: the JSON Schema of each contract, the index, and their rendering.

The lowest layer of the schema tooling, with no policy: `contracts.evolution` compares these documents with a
released baseline, and `contracts.schema_export` (the command) writes and checks the files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from contracts.registry import ALL_CONTRACTS, ContractSpec

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
# The schemas of the last release: what deployed consumers read. Written only by `make schemas-release`.
RELEASED_DIR = SCHEMAS_DIR / "released"
INDEX_FILE = "index.json"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def contract_schema(spec: ContractSpec) -> dict[str, Any]:
    """The JSON Schema of a record value of this contract (the envelope with its `data`)."""
    schema = spec.envelope.model_json_schema(mode="validation")
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"urn:order-status-platform:contracts:{spec.event_type}",
        "x-topic": str(spec.topic),
        "x-schema-version": spec.schema_version,
        **schema,
    }


def build_index() -> dict[str, dict[str, Any]]:
    return {
        spec.event_type: {
            "file": spec.schema_file,
            "model": spec.model.__name__,
            "schema_version": spec.schema_version,
            "topic": str(spec.topic),
        }
        for spec in ALL_CONTRACTS
    }


def render(document: Any) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def expected_files() -> dict[str, str]:
    """File name -> content, for every file a schemas directory must hold."""
    files = {spec.schema_file: render(contract_schema(spec)) for spec in ALL_CONTRACTS}
    files[INDEX_FILE] = render(build_index())
    return files
