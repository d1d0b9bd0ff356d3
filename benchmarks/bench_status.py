"""How long `plan` takes on the paper-scale recipe, and `status` over ~10,000 shard manifests.

Writes a synthetic run directory whose manifests carry the digests a real run would (so status does its full
freshness check), then times status with and without that check. Target: status under 2 s.

    python benchmarks/bench_status.py [--recipe jobs/am-thinking-distill.yaml] [--manifests 10000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from distillery.cli import _write_snapshot
from distillery.core.plan import build_groups, pending_groups
from distillery.core.recipe import load_recipe
from distillery.core.runner import load_run_recipe
from distillery.ops.status import collect_status, render_status
from distillery.core.store import RunDir
from distillery.executors.sbatch import render_sbatch
from distillery.testing import finish_markers, finish_shard


def fake_run(recipe_path: Path, root: Path, manifests: int) -> tuple[RunDir, int]:
    recipe = load_recipe(recipe_path, check_paths=False)
    per_shard_groups = [g for g in build_groups(recipe) if g.phase in ("process", "task") and g.num_shards > 1]
    shards = max(1, manifests // max(1, len(per_shard_groups)))
    recipe = load_recipe(recipe_path, [f"num_shards={shards}", f"run_dir={root}"], check_paths=False)
    run = RunDir(root)
    _write_snapshot(recipe, run)
    recipe = load_run_recipe(run)
    written = 0
    for group in build_groups(recipe):
        if group.phase == "scan":
            finish_markers(run, group.step, group.lineage, group.shards)
        if group.phase in ("scan", "merge"):
            continue
        for shard_index in group.shards:
            finish_shard(run, group.step, group.lineage, shard_index, [{"id": f"{group.key}-{shard_index}"}],
                         recipe=recipe, elapsed_s=60.0)
            written += 1
    return run, written


def fake_data_dir(root: Path) -> None:
    """The paper recipe reads ${DISTILLERY_DATA}: give it empty query files so its paths resolve here."""
    os.environ.setdefault("DISTILLERY_RUNS", str(root / "runs"))
    os.environ["DISTILLERY_DATA"] = str(root / "data")
    (root / "data" / "queries").mkdir(parents=True)
    for category in ("math", "code", "science", "instruction_following", "chat", "general"):
        (root / "data" / "queries" / f"{category}.jsonl").touch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=Path("jobs/am-thinking-distill.yaml"))
    parser.add_argument("--manifests", type=int, default=10_000)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-status-"))
    fake_data_dir(scratch)
    started = time.perf_counter()
    recipe = load_recipe(args.recipe, check_paths=False)
    groups = build_groups(recipe)
    scripts = [render_sbatch(recipe, group) for group in groups]
    plan_s = time.perf_counter() - started
    print(f"plan (paper recipe): {len(groups)} job arrays, {sum(len(g.shards) for g in groups)} tasks, "
          f"{len(scripts)} sbatch scripts in {plan_s:.3f}s")

    with tempfile.TemporaryDirectory() as tmp:
        run, written = fake_run(args.recipe, Path(tmp) / "run", args.manifests)
        recipe = load_run_recipe(run)
        for label, check in (("status --fast (manifests only)", False), ("status (with freshness check)", True)):
            started = time.perf_counter()
            text = render_status(collect_status(run, recipe, check_inputs=check))
            elapsed = time.perf_counter() - started
            print(f"{label}: {written} manifests in {elapsed:.3f}s  (target < 2 s: {'met' if elapsed < 2 else 'MISSED'})")
        started = time.perf_counter()
        pending = pending_groups(run, recipe)
        print(f"resume planning over the same run: {len(pending)} groups pending in {time.perf_counter() - started:.3f}s")
        print(text.splitlines()[0])
        print("\n".join(text.splitlines()[2:6]))
    shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
