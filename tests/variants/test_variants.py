"""Dataset variants derived from an attempt log, through the real runner (structure filter, scan, merge, process).

The attempt log is built here from MATH-500 problems: each query has a hidden sequence of per-attempt scores,
and the log records what the regeneration loop at the run's threshold (0.9) would have generated: attempts up to
the first passing one, at most `max_attempts`. Some attempts are malformed, so the structure filter
drops them (an unclosed <think> block). An independent simulation of the loop at each variant's threshold gives the expected dataset.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from statistics import quantiles
from typing import Any

import numpy as np
import pytest
import yaml

from distillery.core.plan import build_groups, pending_groups
from distillery.schema.records import Attempt, Trace, make_query
from distillery.core.runner import load_run_recipe
from distillery.core.store import Manifest, RunDir, iter_jsonl
from distillery.data import benchmarks_dir
from distillery.executors import build_executor
from distillery.executors.handles import all_done
from distillery.testing import finish_shard
from distillery.variants.rules import length_sample, sample_size, tie_break

MAX_ATTEMPTS = 3
RUN_THRESHOLD = 0.9
SHARDS = 2
SCORES = (0.0, 0.5, 0.75, 0.85, 0.92, 0.97, 1.0)


def _problems(count: int) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (benchmarks_dir() / "math500" / "math500.jsonl").open()]
    return rows[:count]


def _attempt_log(count: int = 40, seed: int = 7) -> list[dict[str, Any]]:
    """Per query: its trace as generated at the run's threshold, the hidden full score sequence, and which
    attempts are well-formed."""
    rng = random.Random(seed)
    log = []
    for number, problem in enumerate(_problems(count)):
        category = "math" if number % 3 else "science"
        query = make_query(category, [{"role": "user", "content": problem["problem"]}])
        scores = [rng.choice(SCORES) for _ in range(MAX_ATTEMPTS)]
        well_formed = [rng.random() > 0.25 for _ in range(MAX_ATTEMPTS)]
        first_pass = next((k for k, s in enumerate(scores) if s >= RUN_THRESHOLD), None)
        recorded = MAX_ATTEMPTS if first_pass is None else first_pass + 1
        words = problem["solution"].split()[: 20 + rng.randrange(200)]
        attempts = []
        for k in range(recorded):
            reasoning = f"<think>Attempt {k}: " + " ".join(words)
            response = (f"{reasoning}</think><answer>{problem['answer']}</answer>" if well_formed[k]
                        else f"{reasoning}\n{problem['answer']}")  # the think block never closes
            attempts.append(Attempt(index=k, seed=k, response=response, score=scores[k], passed=scores[k] >= RUN_THRESHOLD,
                                    completion_tokens=len(response.split())))
        trace = Trace(query=query, teacher="t1", attempts=attempts, accepted=first_pass,
                      response_tokens=attempts[first_pass].completion_tokens if first_pass is not None else 0)
        log.append({"trace": trace, "scores": scores, "well_formed": well_formed})
    return log


def _run(tmp_path: Path, smollm2_dir: Path, rules: dict[str, Any]) -> tuple[RunDir, list[dict[str, Any]]]:
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    recipe = {
        "name": "variants", "run_dir": str(run.root), "num_shards": SHARDS,
        "teachers": [{"name": "t1", "model": "replay.jsonl", "backend": "replay"}],
        "steps": {
            "generate": {"max_attempts": MAX_ATTEMPTS},
            "structure": {"tokenizer": str(smollm2_dir)},
            "variants": {"rules": rules},
        },
    }
    run.recipe.write_text(yaml.safe_dump(recipe, sort_keys=False))
    loaded = load_run_recipe(run)
    log = _attempt_log()
    for shard in range(SHARDS):
        mine = [entry["trace"] for entry in log[shard::SHARDS]]
        finish_shard(run, "generate", "t1", shard, (t.model_dump(mode="json") for t in mine if t.accepted is not None),
                     ((t.model_dump(mode="json"), "no attempt reached 0.9") for t in mine if t.accepted is None),
                     recipe=loaded)
    assert all_done(build_executor(loaded, run, "local").execute(pending_groups(run, loaded)))
    assert pending_groups(run, loaded) == [], "every group is done and fresh after the run"
    return run, log


def _outputs(run: RunDir, lineage: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Manifest]]:
    kept = [r for s in range(SHARDS) for r in iter_jsonl(run.shard("variants", lineage, s).output)]
    dropped = [r for s in range(SHARDS) for r in iter_jsonl(run.shard("variants", lineage, s).rejected)]
    manifests = [Manifest.load(run.shard("variants", lineage, s).manifest) for s in range(SHARDS)]
    return kept, dropped, manifests


def _expected_at(log: list[dict[str, Any]], threshold: float) -> tuple[set[tuple[str, int]], int]:
    """The loop at `threshold` over each query's full score sequence: (query id, attempt) pairs it accepts whose
    attempt the log holds and the structure filter keeps, and how many queries it would need new attempts for."""
    kept: set[tuple[str, int]] = set()
    needs_new = 0
    for entry in log:
        trace, scores = entry["trace"], entry["scores"]
        accept = next((k for k in range(MAX_ATTEMPTS) if scores[k] >= threshold), None)
        recorded = len(trace.attempts)
        if accept is not None and accept < recorded:
            if entry["well_formed"][accept]:
                kept.add((trace.query.id, accept))
        elif recorded < MAX_ATTEMPTS:
            needs_new += 1
    return kept, needs_new


@pytest.mark.slow
def test_variants_from_the_attempt_log(tmp_path: Path, smollm2_dir: Path) -> None:
    rules = {
        "t0.8": {"threshold": 0.8}, "t1.0": {"threshold": 1.0}, "t0.9": {"threshold": 0.9},
        "all": {"keep_all": True}, "raw": {"no_filter": "structure"},
        "uniform": {"length": "uniform", "fraction": 0.5}, "diverse": {"length": "diverse", "fraction": 0.5},
    }
    run, log = _run(tmp_path, smollm2_dir, rules)
    recipe = load_run_recipe(run)
    assert recipe.teachers_of("variants") == [f"t1+{name}" for name in rules]
    assert {g.key for g in build_groups(recipe) if g.step == "variants"} == {
        f"variants/t1+{name}:{phase}" for name in rules for phase in ("scan", "merge", "process")}

    base = {r["query"]["id"]: r for s in range(SHARDS) for r in iter_jsonl(run.shard("structure", "t1", s).output)}
    for name, threshold in (("t0.8", 0.8), ("t1.0", 1.0), ("t0.9", RUN_THRESHOLD)):
        kept, dropped, manifests = _outputs(run, f"t1+{name}")
        expected, needs_new = _expected_at(log, threshold)
        assert {(r["query"]["id"], r["accepted"]) for r in kept} == expected, name
        assert sum(m.stats.get("needs_new_attempts", 0) for m in manifests) == needs_new, name
        assert sum(m.inputs for m in manifests) == len(log) and all(m.reconciles() for m in manifests)
        assert all(r["metadata"]["variant"]["name"] == name for r in kept)
        if threshold < RUN_THRESHOLD:
            assert needs_new == 0 and any(r["accepted"] != base.get(r["query"]["id"], {}).get("accepted") for r in kept)
        if threshold == RUN_THRESHOLD:  # the run's own threshold gives back the teacher's own dataset
            assert {r["query"]["id"] for r in kept} == set(base)
        if threshold > RUN_THRESHOLD:
            assert needs_new > 0 and sum("needs new attempts" in r["reason"] for r in dropped) == needs_new

    kept, dropped, _ = _outputs(run, "t1+all")
    attempts = {(e["trace"].query.id, k) for e in log for k in range(len(e["trace"].attempts))}
    seen = [(r["query"]["id"], r["accepted"]) for r in kept] + [tuple(r["key"].split("#")) for r in dropped]
    assert len(seen) == len(attempts) and {(q, int(k)) for q, k in seen} == attempts, "keep_all loses no attempt"
    assert {(r["query"]["id"], r["accepted"]) for r in kept} == {
        (e["trace"].query.id, k) for e in log for k in range(len(e["trace"].attempts)) if e["well_formed"][k]}
    assert all(r["metadata"]["variant"]["score"] == r["attempts"][r["accepted"]]["score"] for r in kept)

    kept, _, _ = _outputs(run, "t1+raw")
    assert {r["query"]["id"] for r in kept} == {e["trace"].query.id for e in log if e["trace"].accepted is not None}
    assert len(kept) > len(base), "without the structure filter the malformed answers stay"

    samples = {}
    for shape in ("uniform", "diverse"):
        kept, _, _ = _outputs(run, f"t1+{shape}")
        assert {r["query"]["id"] for r in kept} <= set(base)
        samples[shape] = kept
    mix = {shape: sorted(r["query"]["category"] for r in rows) for shape, rows in samples.items()}
    assert mix["uniform"] == mix["diverse"], "equal size and equal category mix"
    assert len(mix["uniform"]) == sum(round(n * 0.5) for n in (
        sum(r["query"]["category"] == c for r in base.values()) for c in ("math", "science")))
    lengths = {shape: sorted(r["metadata"]["student_tokens"] for r in rows) for shape, rows in samples.items()}
    spread = {shape: quantiles(values, n=4)[2] - quantiles(values, n=4)[0] for shape, values in lengths.items()}
    assert spread["uniform"] < spread["diverse"]
    every = sorted(r["metadata"]["student_tokens"] for r in base.values())
    assert lengths["diverse"][0] == every[0] and lengths["diverse"][-1] == every[-1], "diverse spans the range"

    # staleness as for teachers: a changed rule reruns that variant's lineage and nothing else
    snapshot = yaml.safe_load(run.recipe.read_text())
    snapshot["steps"]["variants"]["rules"]["t0.8"]["threshold"] = 0.85
    run.recipe.write_text(yaml.safe_dump(snapshot, sort_keys=False))
    pending = pending_groups(run, load_run_recipe(run))
    assert [(g.key, g.shards) for g in pending] == [
        (f"variants/t1+t0.8:{phase}", [0] if phase == "merge" else list(range(SHARDS)))
        for phase in ("scan", "merge", "process")]


@pytest.mark.parametrize("shape", ["uniform", "diverse"])
def test_the_compact_length_sample_picks_what_sorting_the_traces_picks(shape: str) -> None:
    """The merge draws from 20 bytes a trace; the same sample as ranking the traces themselves, lengths with many
    ties included."""
    rng = random.Random(7)
    rows = [(f"q{i}", rng.choice("abc"), rng.choice([5, 50, 51, 52, 300, rng.randrange(1, 4000)])) for i in range(900)]
    categories = np.array(["abc".index(c) for _, c, _ in rows], dtype=np.int32)
    tokens = np.array([t for *_, t in rows], dtype=np.int64)
    ties = np.array([tie_break(key, 3) for key, *_ in rows], dtype=np.uint64)
    mask = length_sample(categories, tokens, ties, shape, 0.3)
    expected: set[str] = set()
    for category in "abc":
        ranked = sorted((t, tie_break(k, 3), k) for k, c, t in rows if c == category)
        take = sample_size(len(ranked), 0.3)
        if shape == "uniform":
            median = ranked[len(ranked) // 2][0]
            expected |= {k for _, _, k in sorted((abs(t - median), h, k) for t, h, k in ranked)[:take]}
        else:
            step = (len(ranked) - 1) / (take - 1)
            expected |= {ranked[round(i * step)][2] for i in range(take)}
    assert {rows[i][0] for i in np.flatnonzero(mask)} == expected
