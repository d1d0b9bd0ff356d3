"""Behaviour at 10,000 (or 100,000) shards per step: plan, status, resume of 1% failed shards, file count.

A synthetic run of two steps (ingest, then the test-only `test_sleepy` stage) whose every shard is written the
way the runner writes it (`distillery.testing.finish_shard`: output, rejected rows, manifest with real digests).
Then 1% of the second step's shards lose their manifest (a failed task), and the script times:
- `plan` (task groups with their shard counts),
- `status` with its full freshness check, and `status --fast`,
- resume planning (which shards are pending), and the resume itself through the local executor,
and checks that resume reran exactly the failed shards. Targets (issue 17): plan and resume each under 5 s,
status under 1 s at 10,000 shards and under 10 s at 100,000.

    python benchmarks/bench_scale.py [--shards 10000]
"""

from __future__ import annotations

import argparse
import logging
import random
import tempfile
import time
from pathlib import Path
from unittest import mock

import yaml

from distillery.core import store
from distillery.core.plan import build_groups, pending_groups
from distillery.core.runner import load_run_recipe
from distillery.ops.status import collect_status, render_status
from distillery.core.store import RunDir
from distillery.executors import build_executor
from distillery.executors.handles import all_done
from distillery.testing import finish_shard
from distillery.testing.stages import PLUGIN


def synthetic_run(root: Path, shards: int) -> RunDir:
    """The synthetic run, written without fsync: at 100,000 shards the syncs alone take an hour here, and the
    setup is not what is measured (every timed step below runs with the store as shipped)."""
    with mock.patch.object(store, "_fsync", lambda path: None):
        return _write_run(root, shards)


def _write_run(root: Path, shards: int) -> RunDir:
    (root / "queries.jsonl").write_text("")
    recipe = {"name": "scale", "run_dir": str(root / "run"), "num_shards": shards, "plugins": [PLUGIN],
              "steps": {"ingest": {"inputs": [{"path": str(root / "queries.jsonl")}]},
                        "sleepy": {"type": "test_sleepy"}}}
    run = RunDir(root / "run")
    run.root.mkdir(parents=True)
    run.recipe.write_text(yaml.safe_dump(recipe))
    loaded = load_run_recipe(run)
    for step in ("ingest", "sleepy"):
        for shard_index in range(shards):
            finish_shard(run, step, None, shard_index, [], recipe=loaded, elapsed_s=1.0)
    return run


def timed(label: str, action):  # noqa: ANN001, ANN201 - a timing wrapper around any call
    started = time.perf_counter()
    result = action()
    print(f"{label:<44} {time.perf_counter() - started:8.3f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=10_000, help="shards per step")
    parser.add_argument("--failed", type=float, default=0.01, help="share of the second step's shards that failed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        run = timed(f"write a synthetic run of 2 x {args.shards} shards", lambda: synthetic_run(root, args.shards))
        recipe = load_run_recipe(run)
        failed = sorted(random.Random(0).sample(range(args.shards), max(1, int(args.shards * args.failed))))
        for shard_index in failed:
            run.shard("sleepy", None, shard_index).manifest.unlink()
        files = sum(1 for _ in run.root.rglob("*"))
        print(f"files in the run directory: {files} ({files / (2 * args.shards):.1f} per shard, none per record)")
        timed("plan (task groups)", lambda: build_groups(recipe))
        timed("status --fast (manifests only)", lambda: collect_status(run, recipe, check_inputs=False))
        statuses = timed("status (with the freshness check)", lambda: collect_status(run, recipe))
        timed("render the status table", lambda: render_status(statuses))
        pending = timed("resume planning (pending shards)", lambda: pending_groups(run, recipe, sweep=True))
        assert [(g.key, g.shards) for g in pending] == [("sleepy:process", failed)], "resume would rerun others"
        executor = build_executor(recipe, run, "local")
        handles = timed(f"resume: rerun the {len(failed)} failed shards locally", lambda: executor.execute(pending))
        assert all_done(handles) and pending_groups(run, recipe) == [], "something is still pending after the resume"
        print(render_status(collect_status(run, recipe)))


if __name__ == "__main__":
    main()
