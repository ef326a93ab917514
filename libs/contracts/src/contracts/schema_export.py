"""Export the JSON Schema of every contract (envelope included) to ``libs/contracts/schemas/``.

``python -m contracts.schema_export`` writes ``<event-type>.json`` per contract and ``index.json``
(type -> schema version, file, topic, model) and removes schema files no contract produces any more;
``--check`` writes nothing and exits 1 when the files on disk differ from what the code produces (and says
which differences are breaking changes that need a new version, see `contracts.evolution`).
The output is deterministic (sorted keys, two-space indent, trailing newline) so it diffs well in review.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from contracts.registry import ALL_CONTRACTS, ContractSpec

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
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
    """File name -> content, for every file the schemas directory must hold."""
    files = {spec.schema_file: render(contract_schema(spec)) for spec in ALL_CONTRACTS}
    files[INDEX_FILE] = render(build_index())
    return files


def check_schemas(directory: Path = SCHEMAS_DIR) -> list[str]:
    """The differences between `directory` and the code: missing, stale and orphaned files."""
    expected = expected_files()
    problems = []
    for name, content in sorted(expected.items()):
        path = directory / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif path.read_text(encoding="utf-8") != content:
            problems.append(f"{name}: stale (differs from the code)")
    for path in sorted(directory.glob("*.json")):
        if path.name not in expected:
            problems.append(f"{path.name}: orphaned (no contract produces it)")
    return problems


def write_schemas(directory: Path = SCHEMAS_DIR) -> list[str]:
    """Bring `directory` in line with the code; the names of the files written or removed."""
    directory.mkdir(parents=True, exist_ok=True)
    expected = expected_files()
    changed = []
    for name, content in sorted(expected.items()):
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != content:
            path.write_text(content, encoding="utf-8")
            changed.append(name)
    for path in sorted(directory.glob("*.json")):
        if path.name not in expected:
            path.unlink()
            changed.append(path.name)
    return changed


def load_index(directory: Path = SCHEMAS_DIR) -> dict[str, dict[str, Any]]:
    """The committed index (empty when there is none yet)."""
    path = directory / INDEX_FILE
    if not path.is_file():
        return {}
    index: dict[str, dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return index


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m contracts.schema_export", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the files differ from the code")
    parser.add_argument("--dir", type=Path, default=SCHEMAS_DIR, help="schemas directory (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.check:
        from contracts.evolution import REGENERATE_ADVICE, Baseline, evolution_failures

        breaking = evolution_failures(ALL_CONTRACTS, Baseline.from_directory(args.dir))
        problems = check_schemas(args.dir)
        for message in [*breaking, *problems]:
            print(message, file=sys.stderr)
        if problems:
            print(f"schemas are out of date: {REGENERATE_ADVICE}", file=sys.stderr)
        if breaking or problems:
            return 1
        print(f"{len(ALL_CONTRACTS)} contract schemas up to date in {args.dir}")
        return 0
    changed = write_schemas(args.dir)
    print(f"{len(changed)} file(s) updated in {args.dir}" + (f": {', '.join(changed)}" if changed else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
