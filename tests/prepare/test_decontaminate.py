"""Decontamination against MATH-500 and AIME with the default embedding model, through the real runner.

Recall and false removals are measured per kind of change on problems planted among clean queries (planted.py)
and printed; the assertions hold the kinds the issue requires (formatting, edits, prompt templates), forbid any
clean removal, and keep the items' wording with other digits as template reuse. Rewordings are measured and
printed (the fingerprint rule catches those that keep the numbers); test_contamination_set.py holds the recall
targets on the larger labelled set.
"""

from __future__ import annotations

import collections
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from distillery.cli import main
from distillery.core.recipe import load_recipe, snapshot
from distillery.core.runner import run_task
from distillery.core.store import Manifest, RunDir, read_json
from distillery.testing import planted
from distillery.testing.prepare import (
    MATH_BENCHMARKS,
    decontaminate_step,
    kept_ids,
    math_query_id,
    query_row,
    read_audit,
    rejected,
    run_recipe,
    write_rows,
)


@pytest.mark.slow
def test_planted_problems_are_caught_clean_queries_survive_and_the_audit_names_each(
        tmp_path: Path, benchmarks_dir: Path, embed_cache: Path) -> None:
    rows = planted.build(benchmarks_dir)
    inputs = write_rows(tmp_path / "queries.jsonl", (query_row(r.text) for r in rows))
    run = run_recipe(tmp_path, "planted", inputs, {"decontaminate": decontaminate_step(benchmarks_dir, embed_cache)}, num_shards=2)
    kept = set(kept_ids(run, "decontaminate"))
    audit = read_audit(run)
    dropped_rows = [r for r in audit if r["dropped"]]
    removed: dict[str, list[bool]] = collections.defaultdict(list)
    for row in rows:
        removed[row.kind].append(math_query_id(row.text) not in kept)
    share = {kind: round(float(np.mean(flags)), 3) for kind, flags in removed.items()}
    print(f"\nremoved share per kind (all-MiniLM-L6-v2, cascade defaults): {share} "
          f"of {({kind: len(flags) for kind, flags in removed.items()})}")
    assert share["formatting"] >= 0.95 and share["edits"] >= 0.95 and share["template"] >= 0.95
    assert share["same_topic"] == 0.0 and share["unrelated"] == 0.0 and share["other_numbers"] == 0.0

    matched = {(r["query_id"], r["benchmark"], r["item_id"]) for r in dropped_rows}
    for row in rows:
        query_id = math_query_id(row.text)
        if query_id not in kept:
            assert (query_id, row.benchmark, row.item_id) in matched, f"audit does not name the source of {row.kind} {query_id}"
    assert {r["query_id"] for r in dropped_rows} == set(rejected(run, "decontaminate"))
    assert all(r["similarity"] >= 0.9 for r in dropped_rows if r["rule"] == "embedding")
    grams = [len(r["ngram"].split()) for r in dropped_rows if r["rule"] == "ngram"]
    assert grams and all(6 <= n <= 13 for n in grams), "13 content words, or the whole of a shorter item's content"
    assert all(r["fingerprint_share"] >= 0.8 or r["numbers_share"] >= 0.8 for r in dropped_rows if r["rule"] == "fingerprint")
    reused = {(r["query_id"], r["item_id"]) for r in audit if r["finding"] == "template_reuse" and not r["dropped"]}
    flagged = [r for r in rows if r.kind == "other_numbers" and any(q == math_query_id(r.text) for q, _ in reused)]
    assert len(flagged) >= 5 and all((math_query_id(r.text), r.item_id) in reused for r in flagged)
    print(f"other digits flagged as template reuse (kept): {len(flagged)} of {len(removed['other_numbers'])}")
    caught_rewordings = [r for r in rows if r.kind == "rewording" and math_query_id(r.text) not in kept]
    print(f"rewordings caught: {len(caught_rewordings)} of {len(removed['rewording'])}")

    summary = read_json(run.stage_dir("decontaminate") / "summary.json")
    assert summary["dropped_queries"] == len(rows) - len(kept)
    assert sum(b["dropped_queries"] for b in summary["benchmarks"].values()) == summary["dropped_queries"]
    for manifest in run.stage_dir("decontaminate").glob("shard-*.done.json"):
        assert Manifest.load(manifest).reconciles()


@pytest.mark.slow
def test_two_mpi_ranks_give_exactly_the_one_rank_result(tmp_path: Path, benchmarks_dir: Path, embed_cache: Path) -> None:
    rows = planted.build(benchmarks_dir, per_kind=5, names=("aime24", "aime25"))
    inputs = write_rows(tmp_path / "queries.jsonl", (query_row(r.text) for r in rows))
    steps = {"decontaminate": decontaminate_step(benchmarks_dir, embed_cache, batch_size=8, benchmarks=MATH_BENCHMARKS[:2])}
    one = run_recipe(tmp_path, "one", inputs, steps, num_shards=1)

    two = RunDir(tmp_path / "two")
    recipe_path = tmp_path / "two.yaml"
    recipe_path.write_text(yaml.safe_dump({"name": "two", "run_dir": str(two.root), "num_shards": 1,
                                           "steps": {"ingest": {"inputs": [{"path": str(inputs)}]}, **steps}}, sort_keys=False))
    two.root.mkdir()
    two.recipe.write_text(yaml.safe_dump(snapshot(load_recipe(recipe_path)), sort_keys=False))
    for phase in ("scan", "merge", "process"):  # ingest is a shuffle: its three phases
        run_task(str(two.root), "ingest", None, phase, 0)
    mpiexec = Path(sys.executable).parent / "mpiexec"
    result = subprocess.run([str(mpiexec), "-n", "2", sys.executable, "-m", "distillery.prepare.mpi_task", str(two.root),
                             "decontaminate", "scan", "0"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank1" in result.stderr and "rank 1/2" in (two.log_dir("decontaminate") / "shard-00000.scan.rank1.log").read_text()
    assert main(["run", str(two.root)]) == 0

    matches = one.shard_summary("decontaminate", None, "matches", 0, ".jsonl").relative_to(one.stage_dir("decontaminate"))
    for name in (matches, "audit.jsonl", "summary.json", "shard-00000.jsonl", "rejected/shard-00000.jsonl"):
        ours, theirs = ((run.stage_dir("decontaminate") / name).read_bytes().replace(bytes(run.root), b"RUN") for run in (two, one))
        assert ours == theirs, name
    assert len(read_audit(one)) > 0 and rejected(one, "decontaminate")
