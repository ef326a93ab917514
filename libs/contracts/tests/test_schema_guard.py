"""THE guard: the committed JSON Schemas are current, and published contracts only change compatibly.

A breaking change to a published event type fails unless its SCHEMA_VERSION was bumped relative to the
committed ``schemas/index.json`` (and so a new ``.vN`` type is published); a merely stale schema fails with the
instruction to regenerate. The committed files are compared as they are on disk and, when git is available,
as they are at ``$CONTRACTS_SCHEMA_BASELINE`` (default ``HEAD``): regenerating the files does not launder a
breaking change made since the last commit (CI can point the baseline at the target branch).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from contracts import ALL_CONTRACTS, OrderStatusReported, envelope_type
from contracts.evolution import BUMP_ADVICE, REGENERATE_ADVICE, Baseline, evolution_failures
from contracts.registry import ContractSpec
from contracts.schema_export import (
    INDEX_FILE,
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


def _git_baseline(rev: str, directory: Path = SCHEMAS_DIR) -> Baseline | None:
    """The schemas as committed at `rev` (None without git, or when that revision has none)."""

    def show(name: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "show", f"{rev}:./{name}"], cwd=directory, capture_output=True, text=True, check=False
            )
        except OSError:
            return None
        return done.stdout if done.returncode == 0 else None

    index_text = show(INDEX_FILE)
    if index_text is None:
        return None
    index = json.loads(index_text)
    schemas = {}
    for event_type, entry in index.items():
        text = show(entry["file"])
        if text is not None:
            schemas[event_type] = json.loads(text)
    return Baseline(index=index, schemas=schemas)


# --- the guard itself ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ALL_CONTRACTS, ids=SPEC_IDS)
def test_published_contract_changed_only_compatibly(spec: ContractSpec) -> None:
    failures = evolution_failures([spec], Baseline.from_directory(SCHEMAS_DIR))
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


def test_published_contracts_changed_only_compatibly_since_the_git_baseline() -> None:
    rev = os.environ.get("CONTRACTS_SCHEMA_BASELINE", "HEAD")
    baseline = _git_baseline(rev)
    if baseline is None:
        pytest.skip(f"no committed schemas at git revision {rev!r} to compare with")
    failures = evolution_failures(ALL_CONTRACTS, baseline)
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)


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


def test_git_baseline_reads_the_committed_files(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
        )

    try:
        git("init", "-q")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not available")
    schemas = tmp_path / "libs" / "contracts" / "schemas"
    write_schemas(schemas)
    git("add", ".")
    git("commit", "-q", "-m", "publish")
    (schemas / INDEX_FILE).write_text("{}\n", encoding="utf-8")  # uncommitted edits do not count

    baseline = _git_baseline("HEAD", schemas)

    assert baseline == Baseline.from_directory(SCHEMAS_DIR)
    assert baseline is not None
    assert evolution_failures([_spec(_CodeBecameANumber)], baseline) != []
    assert _git_baseline("no-such-rev", schemas) is None


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

    assert main(["--check", "--dir", str(published)]) == 1
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
