"""THE guard: the committed JSON Schemas are current, and released contracts only change compatibly.

A breaking change to a released event type fails unless its SCHEMA_VERSION was bumped relative to the released
``schemas/released/index.json`` (and so a new ``.vN`` type is published); a merely stale schema fails with the
instruction to regenerate. The baseline is the release, written only by ``make schemas-release``, never the
regenerated ``schemas/`` beside the code: regenerating the files does not launder a breaking change.
`make test` runs the same check as ``python -m contracts.schema_export --check``; the tests below drive that
command with a release that differs from the code in one way each.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from contracts import ALL_CONTRACTS, OrderStatusReported, envelope_type
from contracts.evolution import BUMP_ADVICE, REGENERATE_ADVICE, RELEASE_ADVICE, Baseline, evolution_failures
from contracts.registry import ContractSpec
from contracts.schema_export import (
    INDEX_FILE,
    RELEASED_DIR,
    SCHEMAS_DIR,
    build_index,
    check_schemas,
    contract_schema,
    main,
    render,
    write_schemas,
)

SPEC_IDS = [spec.event_type for spec in ALL_CONTRACTS]


def _staleness(spec: ContractSpec, directory: Path) -> str | None:
    path = directory / spec.schema_file
    if not path.is_file():
        return f"{spec.event_type}: no committed schema {path.name}; {REGENERATE_ADVICE}"
    if path.read_text(encoding="utf-8") != render(contract_schema(spec)):
        return f"{spec.event_type}: the committed schema {path.name} is stale; {REGENERATE_ADVICE}"
    return None


# --- the guard itself ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ALL_CONTRACTS, ids=SPEC_IDS)
def test_released_contract_changed_only_compatibly(spec: ContractSpec) -> None:
    failures = evolution_failures([spec], Baseline.from_directory(RELEASED_DIR))
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)


@pytest.mark.parametrize("spec", ALL_CONTRACTS, ids=SPEC_IDS)
def test_committed_schema_is_current(spec: ContractSpec) -> None:
    message = _staleness(spec, SCHEMAS_DIR)
    if message:
        pytest.fail(message, pytrace=False)


def test_committed_index_and_files_match_the_code() -> None:
    problems = check_schemas(SCHEMAS_DIR)
    if problems:
        pytest.fail("\n".join([*problems, REGENERATE_ADVICE]), pytrace=False)
    committed = json.loads((SCHEMAS_DIR / INDEX_FILE).read_text(encoding="utf-8"))
    assert committed == build_index()


def test_a_release_is_committed() -> None:
    released = json.loads((RELEASED_DIR / INDEX_FILE).read_text(encoding="utf-8"))
    assert released and all((RELEASED_DIR / entry["file"]).is_file() for entry in released.values())


# --- through the command `make test` runs ---------------------------------------------------------------------

Schema = dict[str, Any]


def _drop_occurred_at(data: Schema) -> None:
    del data["properties"]["occurred_at"]
    data["required"].remove("occurred_at")


def _code_was_an_integer(data: Schema) -> None:
    data["properties"]["code"] = {"type": "integer", "title": "Code"}


def _had_a_legacy_field(data: Schema) -> None:
    data["properties"]["legacy_field"] = {"type": "string", "title": "Legacy Field"}
    data["required"].append("legacy_field")


def _had_no_comment(data: Schema) -> None:
    del data["properties"]["comment"]


def _run_check(schemas: Path, released: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "contracts.schema_export", "--check", "--dir", str(schemas)]
    return subprocess.run([*command, "--released", str(released)], capture_output=True, text=True, check=False)


@pytest.fixture
def regenerated(tmp_path: Path) -> Path:
    """The code's schemas, regenerated as a developer would commit them along with the change."""
    schemas = tmp_path / "schemas"
    write_schemas(schemas)
    return schemas


def _released_before(tmp_path: Path, regenerated: Path, edit: Callable[[Schema], None]) -> Path:
    """A release in which `OrderStatusReported` differed from the code as `edit` says."""
    released = tmp_path / "released"
    shutil.copytree(regenerated, released)
    path = released / "order.status-reported.v1.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    edit(schema["$defs"]["OrderStatusReported"])
    path.write_text(render(schema), encoding="utf-8")
    return released


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (_had_a_legacy_field, "$.data.legacy_field: property removed"),
        (_code_was_an_integer, "$.data.code: type changed from integer to string"),
        (_drop_occurred_at, "$.data.occurred_at: new required property"),
    ],
    ids=["removed field", "changed type", "new required field"],
)
def test_check_fails_on_a_breaking_change_committed_with_its_regenerated_schemas(
    tmp_path: Path, regenerated: Path, edit: Callable[[Schema], None], problem: str
) -> None:
    released = _released_before(tmp_path, regenerated, edit)

    done = _run_check(regenerated, released)

    assert done.returncode == 1, done.stdout
    assert problem in done.stderr and BUMP_ADVICE in done.stderr
    assert "out of date" not in done.stderr  # the regenerated files themselves are current


def test_check_passes_an_added_optional_field(tmp_path: Path, regenerated: Path) -> None:
    released = _released_before(tmp_path, regenerated, _had_no_comment)

    done = _run_check(regenerated, released)

    assert done.returncode == 0, done.stderr


def test_check_fails_without_a_release_to_compare_with(tmp_path: Path, regenerated: Path) -> None:
    done = _run_check(regenerated, tmp_path / "nothing-released")
    assert done.returncode == 1 and RELEASE_ADVICE in done.stderr


def test_release_records_the_code_and_refuses_a_breaking_one(
    tmp_path: Path, regenerated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = tmp_path / "first"
    assert main(["--release", "--released", str(first)]) == 0
    assert check_schemas(first) == []

    released = _released_before(tmp_path, regenerated, _code_was_an_integer)
    before = {path.name: path.read_text(encoding="utf-8") for path in released.iterdir()}
    assert main(["--release", "--released", str(released)]) == 1
    assert "not released" in capsys.readouterr().err
    assert {path.name: path.read_text(encoding="utf-8") for path in released.iterdir()} == before

    compatible = _released_before(tmp_path / "again", regenerated, _had_no_comment)
    assert main(["--release", "--released", str(compatible)]) == 0
    assert check_schemas(compatible) == []


# --- the guard catches what it should ------------------------------------------------------------------------


class _CodeBecameANumber(OrderStatusReported):
    code: int  # type: ignore[assignment]


class _CodeBecameANumberV2(_CodeBecameANumber):
    SCHEMA_VERSION = 2


class _WithOptionalChannel(OrderStatusReported):
    channel: str | None = None


def _spec(model: type[OrderStatusReported]) -> ContractSpec:
    return ContractSpec(model=model, envelope=envelope_type(model))


@pytest.fixture
def published(tmp_path: Path) -> Path:
    write_schemas(tmp_path)
    return tmp_path


def test_guard_fails_on_a_breaking_change_without_a_version_bump(published: Path) -> None:
    (failure,) = evolution_failures([_spec(_CodeBecameANumber)], Baseline.from_directory(published))

    assert failure.startswith("order.status-reported.v1 (_CodeBecameANumber, SCHEMA_VERSION 1)")
    assert "$.data.code: type changed from string to integer" in failure
    assert BUMP_ADVICE in failure


def test_guard_accepts_a_breaking_change_with_a_version_bump(published: Path) -> None:
    assert evolution_failures([_spec(_CodeBecameANumberV2)], Baseline.from_directory(published)) == []


def test_guard_accepts_a_compatible_change_but_asks_for_regeneration(published: Path) -> None:
    spec = _spec(_WithOptionalChannel)

    assert evolution_failures([spec], Baseline.from_directory(published)) == []
    message = _staleness(spec, published)
    assert message is not None
    assert "stale" in message
    assert "make schemas" in message


def test_guard_ignores_contracts_never_published(tmp_path: Path) -> None:
    assert evolution_failures([_spec(_CodeBecameANumber)], Baseline.from_directory(tmp_path)) == []


# --- the exporter ---------------------------------------------------------------------------------------------


def test_export_is_deterministic_and_check_detects_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check", "--dir", str(tmp_path)]) == 1
    assert main(["--dir", str(tmp_path)]) == 0
    assert write_schemas(tmp_path) == []
    assert main(["--check", "--dir", str(tmp_path)]) == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [INDEX_FILE, *(spec.schema_file for spec in ALL_CONTRACTS)]
    )
    for path in tmp_path.iterdir():
        text = path.read_text(encoding="utf-8")
        assert text.endswith("}\n")
        assert text == render(json.loads(text))

    (tmp_path / "order.upserted.v0.json").write_text("{}\n", encoding="utf-8")
    assert main(["--check", "--dir", str(tmp_path)]) == 1
    assert "order.upserted.v0.json: orphaned" in capsys.readouterr().err
    assert write_schemas(tmp_path) == ["order.upserted.v0.json"]
    assert not (tmp_path / "order.upserted.v0.json").exists()


def test_check_names_breaking_changes(published: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = published / "order.status-reported.v1.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    schema["$defs"]["OrderStatusReported"]["properties"]["legacy_field"] = {"type": "string"}
    path.write_text(render(schema), encoding="utf-8")

    assert main(["--check", "--dir", str(published), "--released", str(published)]) == 1
    err = capsys.readouterr().err
    assert "$.data.legacy_field: property removed" in err
    assert BUMP_ADVICE in err
    assert "order.status-reported.v1.json: stale" in err


def test_exported_schema_describes_the_record_value() -> None:
    (spec,) = [spec for spec in ALL_CONTRACTS if spec.model is OrderStatusReported]
    schema = contract_schema(spec)

    assert schema["properties"]["type"]["const"] == "order.status-reported.v1"
    assert {"source", "type", "partnerid", "data"} <= set(schema["required"])
    assert schema["x-schema-version"] == 1
    assert schema["x-topic"] == "orders.inbound.v1"


def test_the_module_runs_as_a_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "contracts.schema_export", "--check"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_evolution_does_not_import_the_command() -> None:
    """The layers go one way: schema_files <- evolution <- schema_export (no import cycle)."""
    code = "import sys, contracts.evolution; print('contracts.schema_export' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
