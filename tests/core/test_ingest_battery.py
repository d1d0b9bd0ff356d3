"""The damaged-file battery (tests/core/ingest_cases.py) through one real ingest run over two shards: every line
of every file has its expected outcome, and every file's lines reconcile (lines = records in all shards + blank)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from distillery.cli import main
from distillery.core.store import Manifest, RunDir, iter_jsonl
from ingest_cases import Blank, Case, Duplicate, Kept, Quarantined, battery

CASES = battery()
NUM_SHARDS = 2


@dataclass
class BatteryRun:
    paths: dict[str, Path]
    kept: dict[str, dict[str, Any]]
    """Kept records by prompt (the last user message)."""
    quarantined: dict[str, dict[str, Any]]
    rejected: dict[str, dict[str, Any]]
    manifests: list[Manifest]


def _rows(directory: Path) -> list[dict[str, Any]]:
    return [row for path in sorted(directory.glob("shard-*.jsonl")) for row in iter_jsonl(path)]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> BatteryRun:
    root = tmp_path_factory.mktemp("battery")
    (root / "files").mkdir()
    paths = {}
    inputs = []
    for case in CASES:
        path = root / "files" / case.name
        case.build(path)
        paths[case.name] = path
        inputs.append({"path": str(path), **case.spec})
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"name": "battery", "run_dir": str(root / "run"), "num_shards": NUM_SHARDS,
                                      "steps": {"ingest": {"inputs": inputs}}}))
    assert main(["run", str(recipe)]) == 0
    stage_dir = RunDir(root / "run").stage_dir("ingest")
    kept: dict[str, dict[str, Any]] = {}
    for record in _rows(stage_dir):
        prompt = next(m["content"] for m in reversed(record["messages"]) if m["role"] == "user")
        assert prompt not in kept, f"two kept records with the prompt {prompt[:80]!r}"
        kept[prompt] = record
    quarantined = {row["where"]: row for row in _rows(stage_dir / "quarantine")}
    rejected = {row["where"]: row for row in _rows(stage_dir / "rejected")}
    manifests = [Manifest.load(path) for path in sorted(stage_dir.glob("*.done.json"))]
    assert len(manifests) == NUM_SHARDS and all(m.reconciles() for m in manifests)
    return BatteryRun(paths, kept, quarantined, rejected, manifests)


def test_the_battery_has_over_forty_distinct_damaged_files() -> None:
    assert len({case.name for case in CASES}) == len(CASES) >= 40


def _typed(value: Any) -> str:
    """JSON text: equal only if the values and their types (1 vs 1.0 vs true) are."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _check(record: dict[str, Any], checks: dict[str, Any], where: str) -> None:
    reference = record["reference"]
    for key, want in checks.items():
        got = {
            "category": lambda: record["category"],
            "answer": lambda: reference["answer"],
            "tests": lambda: [(t["input"], t["output"]) for t in reference["tests"]],
            "fn_name": lambda: reference["fn_name"],
            "messages": lambda: record["messages"],
            "reference": lambda: {k: reference[k] for k in want},  # noqa: B023 - called at once
            "metadata": lambda: {k: record["metadata"].get(k, "<missing>") for k in want},  # noqa: B023
            "am_row": lambda: record["metadata"]["am"]["row"],
        }[key]()
        assert _typed(got) == _typed([list(t) for t in want] if key == "tests" else want), f"{where}: {key}"


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_every_line_has_its_expected_outcome_and_the_file_reconciles(case: Case, run: BatteryRun) -> None:
    path = run.paths[case.name]
    for index, expect in enumerate(case.expect):
        where = case.where(path, index)
        if isinstance(expect, Kept):
            record = run.kept.get(expect.prompt)
            assert record is not None, f"{where}: expected kept, got {run.quarantined.get(where, {}).get('reason')}"
            _check(record, expect.checks, where)
        elif isinstance(expect, Quarantined):
            assert where in run.quarantined, f"{where}: expected quarantined ({expect.reason})"
            assert expect.reason in run.quarantined[where]["reason"], where
        elif isinstance(expect, Duplicate):
            assert run.rejected[where]["reason"] == f"duplicate of {case.where(path, expect.of_line - 1)}"
        else:
            assert where not in run.quarantined and where not in run.rejected
    in_file = f"{path}:"
    expected_quarantine = {case.where(path, i) for i, e in enumerate(case.expect) if isinstance(e, Quarantined)}
    assert {w for w in run.quarantined if w.startswith(in_file)} == expected_quarantine
    assert all(row["reason"] for row in run.quarantined.values())

    entries = [entry for m in run.manifests for entry in m.stats["files"] if entry["path"] == str(path)]
    assert len(entries) == NUM_SHARDS
    lines, blank = entries[0]["lines"], entries[0]["blank"]
    assert all((e["lines"], e["blank"]) == (lines, blank) for e in entries)
    assert lines == len(case.expect) and blank == sum(isinstance(e, Blank) for e in case.expect)
    assert sum(e["in_shard"] for e in entries) + blank == lines
    assert sum(e["quarantined_in_shard"] for e in entries) == len(expected_quarantine)
    truncated = [str(path) in m.stats["truncated_files"] for m in run.manifests]
    if case.problem:
        assert case.problem in entries[0]["problem"] and not entries[0]["complete"] and all(truncated)
    else:
        assert entries[0]["complete"] and not any(truncated), entries[0]["problem"]
