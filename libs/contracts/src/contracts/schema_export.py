"""Export the JSON Schema of every contract (envelope included) to ``libs/contracts/schemas/``, check it, release it.

``python -m contracts.schema_export`` writes ``<event-type>.json`` per contract and ``index.json``
(type -> schema version, file, topic, model) and removes schema files no contract produces any more.
``--check`` writes nothing and exits 1 when the code changed a released contract incompatibly without a new
version (compared with ``schemas/released/``, see `contracts.evolution`), when there is no release to compare
with, or when the files on disk differ from what the code produces. ``--release`` records the code's schemas as
the new release in ``schemas/released/``, refusing the same breaking changes ``--check`` fails on.
The output is deterministic (sorted keys, two-space indent, trailing newline) so it diffs well in review.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from contracts.evolution import REGENERATE_ADVICE, RELEASE_ADVICE, Baseline, evolution_failures
from contracts.registry import ALL_CONTRACTS
from contracts.schema_files import (
    INDEX_FILE,
    RELEASED_DIR,
    SCHEMAS_DIR,
    build_index,
    contract_schema,
    expected_files,
    render,
)

__all__ = [
    "INDEX_FILE",
    "RELEASED_DIR",
    "SCHEMAS_DIR",
    "build_index",
    "check_schemas",
    "contract_schema",
    "main",
    "render",
    "write_schemas",
]


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


def release_failures(released: Path) -> list[str]:
    """Why the code may not pass as compatible with the release in `released` (empty: it may)."""
    if not (released / INDEX_FILE).is_file():
        return [f"no released schemas in {released} to compare with; {RELEASE_ADVICE}"]
    return evolution_failures(ALL_CONTRACTS, Baseline.from_directory(released))


def _check(directory: Path, released: Path) -> int:
    breaking = release_failures(released)
    problems = check_schemas(directory)
    for message in [*breaking, *problems]:
        print(message, file=sys.stderr)
    if problems:
        print(f"schemas are out of date: {REGENERATE_ADVICE}", file=sys.stderr)
    if breaking or problems:
        return 1
    print(f"{len(ALL_CONTRACTS)} contract schemas up to date in {directory}, compatible with {released}")
    return 0


def _release(released: Path) -> int:
    breaking = release_failures(released) if (released / INDEX_FILE).is_file() else []  # the first release
    if breaking:
        for message in breaking:
            print(message, file=sys.stderr)
        print("not released: the release would break its consumers", file=sys.stderr)
        return 1
    changed = write_schemas(released)
    print(f"released: {len(changed)} file(s) updated in {released}" + (f": {', '.join(changed)}" if changed else ""))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m contracts.schema_export", description=__doc__)
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--check", action="store_true", help="exit 1 if stale, or incompatible with the release")
    action.add_argument("--release", action="store_true", help="record the code's schemas as the new release")
    parser.add_argument("--dir", type=Path, default=SCHEMAS_DIR, help="schemas directory (default: %(default)s)")
    parser.add_argument(
        "--released", type=Path, default=RELEASED_DIR, help="the last release's schemas (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if args.check:
        return _check(args.dir, args.released)
    if args.release:
        return _release(args.released)
    changed = write_schemas(args.dir)
    print(f"{len(changed)} file(s) updated in {args.dir}" + (f": {', '.join(changed)}" if changed else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
