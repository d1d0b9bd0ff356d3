"""The rehearsal's cluster path: jobs/rehearsal.yaml over N synthetic queries, run here and through the development
SLURM cluster (slurm/dev-cluster: real slurmctld, slurmd, slurmdbd), must make the same data; a kill of 5% of
one step's array tasks followed by `distillery resume` must rerun exactly what the kill lost.

1. `distillery synth` writes N queries; the recipe runs locally (one shard per `--shard-size` queries).
2. The same recipe, seed and shard count is submitted to the cluster with job arrays of at most
   `--max-array-size` tasks, so every group splits into several arrays chained by afterok. Every finished shard's
   manifest (sha256 of its kept records, digest of their ids, counts) is compared with the local run's: a table
   per step of shards, identical, different.
3. A second cluster run (a fresh run directory): while it runs, `scancel` cancels `--kill-fraction` of the
   `--kill-group` array tasks, picked by shard (array index) with `--kill-seed`; half of them while they wait
   (PENDING, behind their dependencies), half as soon as squeue shows them RUNNING. Once the cluster lists none of
   the run's jobs, the shards without a manifest are what the kill lost (a cancelled running task gets SIGTERM,
   which submitit ignores, and SIGKILL KillWait seconds later: one that finishes its shard in that window has
   lost nothing). `resume` must submit exactly those shards of the killed group, and in every other group exactly
   the shards that had not run (the later steps, cancelled with their dependency); the final output must again
   equal the local run's.

Wall times of each part are printed with their ratio to the local run's, measured in this invocation, plus the CPU
and the load average (the dev cluster declares 8 CPUs on this machine's cores: array tasks share the cores).

    python benchmarks/rehearsal_slurm.py                 # 10,000 queries, 40 shards
    python benchmarks/rehearsal_slurm.py --n 500 --shard-size 125
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from distillery.core.console import CONSOLE, setup_console
from distillery.ops.compare_runs import compare_runs, render_comparison
from distillery.synth.write import write_queries
from distillery.testing.slurm_slice import kill_and_resume, rehearsal_recipe, run_local, small_array_profile, submit, \
    wait_for_run

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from rehearsal import cpu_description  # noqa: E402  (the sibling benchmark's CPU line)

logger = logging.getLogger("distillery.rehearsal_slurm")


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def start_cluster() -> None:
    """The dev cluster (started if it is not running; never stopped here), SLURM_CONF exported for this process."""
    done = subprocess.run([str(REPO / "slurm" / "dev-cluster" / "start.sh")], capture_output=True, text=True,
                          timeout=300)
    if done.returncode != 0 or "export SLURM_CONF=" not in done.stdout:
        raise SystemExit(f"could not start the SLURM dev cluster:\n{done.stderr}")
    os.environ["SLURM_CONF"] = done.stdout.strip().rsplit("export SLURM_CONF=", 1)[1]


def pick_kills(num_shards: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(shards to cancel while pending, shards to cancel once running): `fraction` of the shards, at least one."""
    chosen = sorted(random.Random(seed).sample(range(num_shards), max(1, round(fraction * num_shards))))
    return chosen[1::2], chosen[0::2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="queries (default 10,000)")
    parser.add_argument("--shard-size", type=int, default=250, help="queries per shard (default 250: 40 shards)")
    parser.add_argument("--max-array-size", type=int, default=16, help="most tasks per job array (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic queries (default 0)")
    parser.add_argument("--kill-group", default="generate/am-thinking-v1:process",
                        help="the task group whose array tasks are cancelled (default generate/am-thinking-v1:process)")
    parser.add_argument("--kill-fraction", type=float, default=0.05, help="share of its tasks cancelled (default 0.05)")
    parser.add_argument("--kill-seed", type=int, default=1, help="seed of the choice of tasks to cancel (default 1)")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "rehearsal-slurm",
                        help="folder for the three runs (replaced; default runs/rehearsal-slurm)")
    args = parser.parse_args(argv)
    setup_console()  # distillery's quiet console: steps' progress here, each task's own output in its log file
    start_cluster()
    shutil.rmtree(args.work, ignore_errors=True)
    data = args.work / "data"
    write_queries(data, args.n, args.seed)
    num_shards = max(1, round(args.n / args.shard_size))
    profile = small_array_profile(args.work / "profile.yaml", args.max_array_size)
    cache = args.work.parent / "benchmark-embeddings"  # kept between invocations, shared with rehearsal.py

    def recipe(name: str, slurm: bool) -> Path:
        return rehearsal_recipe(args.work / f"{name}.yaml", args.work / name, data, num_shards,
                                slurm_profile=profile if slurm else None, cache_dir=cache)

    load_start = load()
    logger.info("%d queries, %d shards; local run", args.n, num_shards, extra=CONSOLE)
    started = time.perf_counter()
    run_local(recipe("local", slurm=False))
    local_s = time.perf_counter() - started

    logger.info("cluster run (arrays of at most %d tasks)", args.max_array_size, extra=CONSOLE)
    started = time.perf_counter()
    run, handles = submit(recipe("slurm", slurm=True))
    slurm_ok = wait_for_run(run, handles)
    slurm_s = time.perf_counter() - started
    arrays = len(run.jobs_file().read_text().splitlines())
    comparison = compare_runs(args.work / "local", args.work / "slurm")

    pending, running = pick_kills(num_shards, args.kill_fraction, args.kill_seed)
    logger.info("cluster run with kills: %s shards %s while pending, %s once running", args.kill_group, pending,
                running, extra=CONSOLE)
    report = kill_and_resume(recipe("killed", slurm=True), args.kill_group, pending, running)
    after_resume = compare_runs(args.work / "local", args.work / "killed")
    load_end = load()

    different = sum(len(row.different) for row in comparison)
    problems = report.verdict()
    print(f"\ncluster path of jobs/rehearsal.yaml at {args.n} queries, {num_shards} shards, arrays of at most "
          f"{args.max_array_size} tasks ({arrays} arrays submitted by the clean run)")
    print(f"CPU: {cpu_description()}; load average at the start {load_start}, at the end {load_end}\n")
    print(f"{'part':<32} {'wall s':>8} {'x local':>8}")
    for part, seconds in (("local run", local_s), ("cluster run", slurm_s),
                          ("cluster run with kills", report.submit_s), ("resume after the kills", report.resume_s)):
        print(f"{part:<32} {seconds:>8.1f} {seconds / local_s:>8.2f}")
    print(f"\nlocal vs cluster, per step ({'every task completed' if slurm_ok else 'SOME TASKS FAILED'}):")
    print(render_comparison(comparison))
    killed = ", ".join(f"shard {shard} ({state})" for shard, state in sorted(report.killed.items()))
    print(f"\nkilled {report.group}: {killed}")
    print(f"lost (no manifest when the run ended): {sorted(report.lost_in_group)}; "
          f"killed but finished within KillWait: {sorted(report.cancelled - report.lost_in_group)}")
    print(f"resume reran in {report.group}: {sorted(report.rerun.get(report.group, set()))}")
    others = sorted(key for key in report.rerun if key != report.group)
    print(f"resume submitted in other groups (never ran: cancelled with their dependency): "
          f"{sum(len(report.rerun[k]) for k in others)} tasks in {len(others)} groups")
    print("verdict: resume reran exactly what the kill lost" if not problems else "verdict: WRONG\n  " +
          "\n  ".join(problems))
    after_different = sum(len(row.different) for row in after_resume)
    print(f"after resume, local vs killed-and-resumed: {sum(row.identical for row in after_resume)} shards identical, "
          f"{after_different} different")
    if after_different:
        print(render_comparison(after_resume))
    return 0 if slurm_ok and not different and not problems and not after_different else 1


if __name__ == "__main__":
    sys.exit(main())
