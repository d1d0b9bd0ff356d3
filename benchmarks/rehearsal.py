"""The paper's run rehearsed on this machine at two sizes, N and 10N queries: what each stage costs and how it grows.

For each size: `distillery synth` writes N queries, `jobs/rehearsal.yaml` runs at a fixed shard size (one shard
per `--shard-size` queries, so a task's work is the same at both sizes), then `export`, `status` and `report`
run over the result. Per stage it prints wall seconds (the executor's, all of the step's task groups), CPU
seconds per 1,000 input records and per million tokens, the peak RSS of the largest task, the bytes the stage
left on disk and the files in its folder, and the 10N/N ratio of each. A stage is flagged when its CPU time
grows more than 12x for 10x the work, or its largest task's peak RSS more than 1.3x at the same shard size.

CPU seconds and peak RSS per task come from the task's manifest (`cpu_s`, `peak_rss_mb`: the runner resets the
process's memory high-water mark, /proc/self/clear_refs, when a task starts and reads VmHWM when it ends);
for export, status and report, run in the benchmark's process, the same reset and read. Each size runs in a
fresh process; a task run in-process starts with what earlier tasks left loaded (`start_rss_mb`), so the table
shows the largest task's absolute peak and the most any task added over its start ("task's own"). Tokens: ~4 characters per token
of the prompts (query stages) or of every generated attempt (trace stages). The table is saved as JSON
(`--json`) for the cost model. Decontamination's benchmark embeddings are cached in WORK/benchmark-embeddings,
which is kept between invocations: the first size of a first invocation pays that one-off cost.

    python benchmarks/rehearsal.py                 # N = 10,000 and 100,000 (the 10N run: hours on 2 cores)
    python benchmarks/rehearsal.py --n 500         # 500 and 5,000
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from distillery import cli
from distillery.core.store import iter_jsonl, read_json
from distillery.core.task_usage import start_task, task_usage
from distillery.synth.write import write_queries
from distillery.testing.slurm_slice import rehearsal_recipe, run_local

REPO = Path(__file__).resolve().parent.parent
QUERY_STAGES = ("ingest", "clean", "dedup", "near_dedup", "decontaminate", "generate")
COMMANDS = ("export", "status", "report")
CPU_GROWTH_LIMIT = 12.0
MEMORY_GROWTH_LIMIT = 1.3

logger = logging.getLogger("rehearsal")


def cpu_description() -> str:
    model = "unknown CPU"
    flags: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model} ({', '.join(wanted) or 'no avx2'}), {platform.machine()}"


def recipe_for(work: Path, n: int, shard_size: int, data: Path) -> Path:
    """jobs/rehearsal.yaml pointed at this size's data and run folder, one shard per `shard_size` queries."""
    return rehearsal_recipe(work / "rehearsal.yaml", work / "run", data, max(1, round(n / shard_size)),
                            cache_dir=work.parent / "benchmark-embeddings")


def run_recipe(path: Path) -> dict[str, float]:
    """Run every step with the recipe's executor; wall seconds per step (summed over its teachers and phases)."""
    walls: dict[str, float] = {}
    for key, seconds in run_local(path).items():
        step = key.split("/")[0].split(":")[0]
        walls[step] = walls.get(step, 0.0) + seconds
    return walls


def task_records(step_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(shard manifests, scan and merge markers) of a step, over every teacher and lineage."""
    manifests = [read_json(p) for p in step_dir.rglob("shard-*.done.json")]
    markers = [read_json(p) for p in [*step_dir.rglob("scan-*.done.json"), *step_dir.rglob("merge.done.json")]]
    return manifests, markers


def folder_size(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def token_counts(run: Path, data: Path) -> tuple[float, float]:
    """(prompt tokens of the queries, tokens of every generated attempt), at ~4 characters per token."""
    prompts = sum(len(row["prompt"]) for path in data.glob("*.jsonl") for row in iter_jsonl(path)) / 4
    answers = 0.0
    for path in [*(run / "generate").rglob("shard-*.jsonl*"), *(run / "generate").rglob("rejected/*.jsonl*")]:
        for row in iter_jsonl(path):
            trace = row.get("record", row)
            answers += sum(len(a.get("response", "")) for a in trace.get("attempts", [])) / 4
    return prompts, answers


def measure_command(argv: list[str]) -> dict[str, float]:
    """Wall, CPU seconds and peak RSS of one `distillery` command run in this process (its output discarded)."""
    start_task()
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(argv)
    if code:
        raise SystemExit(f"distillery {' '.join(argv)} failed with exit code {code}")
    return {"wall_s": time.perf_counter() - started, **task_usage()}


def rehearse(root: Path, n: int, shard_size: int, seed: int) -> dict[str, dict[str, float]]:
    work = root / f"n{n}"
    shutil.rmtree(work, ignore_errors=True)
    data = work / "data"
    write_queries(data, n, seed)
    recipe_path = recipe_for(work, n, shard_size, data)
    logger.info("rehearsal at %d queries, %d shards: %s", n, max(1, round(n / shard_size)), work)
    walls = run_recipe(recipe_path)
    run = work / "run"
    prompt_tokens, answer_tokens = token_counts(run, data)
    rows: dict[str, dict[str, float]] = {}
    for step, wall in walls.items():
        manifests, markers = task_records(run / step)
        tasks = manifests + markers
        records = sum(int(m.get("inputs", 0)) for m in manifests)
        cpu = sum(float(t.get("stats", {}).get("cpu_s", 0)) for t in tasks)
        tokens = prompt_tokens if step in QUERY_STAGES else answer_tokens
        size, files = folder_size(run / step)
        rows[step] = {"wall_s": wall, "cpu_s": cpu, "records": records,
                      "cpu_s_per_1k_records": 1000 * cpu / records if records else 0.0,
                      "cpu_s_per_m_tokens": 1e6 * cpu / tokens if tokens else 0.0,
                      "peak_rss_mb": max((float(t.get("stats", {}).get("peak_rss_mb", 0)) for t in tasks), default=0.0),
                      "task_mb": max((float(t.get("stats", {}).get("peak_rss_mb", 0)) -
                                      float(t.get("stats", {}).get("start_rss_mb", 0)) for t in tasks), default=0.0),
                      "disk_mb": size / 2**20, "files": files, "tasks": len(tasks)}
    teacher = "am-thinking-v1"
    for name, argv in (("export", ["export", str(run), "--step", "structure", "--teacher", teacher, "--format", "am",
                                   "-o", str(work / "export.jsonl")]),
                       ("status", ["status", str(run), "--json"]),
                       ("report", ["report", str(run)])):
        measured = measure_command(argv)
        rows[name] = {"wall_s": measured["wall_s"], "cpu_s": measured["cpu_s"], "records": n,
                      "cpu_s_per_1k_records": 1000 * measured["cpu_s"] / n,
                      "cpu_s_per_m_tokens": 1e6 * measured["cpu_s"] / answer_tokens if answer_tokens else 0.0,
                      "peak_rss_mb": measured["peak_rss_mb"],
                      "task_mb": measured["peak_rss_mb"] - measured["start_rss_mb"], "disk_mb": 0.0, "files": 0,
                      "tasks": 1}
    total_size, total_files = folder_size(run)
    rows["run"] = {"wall_s": sum(r["wall_s"] for r in rows.values()), "cpu_s": sum(r["cpu_s"] for r in rows.values()),
                   "records": n, "cpu_s_per_1k_records": 0.0, "cpu_s_per_m_tokens": 0.0,
                   "peak_rss_mb": max(r["peak_rss_mb"] for r in rows.values()),
                   "task_mb": max(r["task_mb"] for r in rows.values()), "disk_mb": total_size / 2**20,
                   "files": total_files, "tasks": sum(r["tasks"] for r in rows.values())}
    return rows


COLUMNS = (("wall_s", "wall s", "{:.1f}"), ("cpu_s_per_1k_records", "cpu s/1k rec", "{:.2f}"),
           ("cpu_s_per_m_tokens", "cpu s/M tok", "{:.1f}"), ("peak_rss_mb", "peak MiB", "{:.0f}"),
           ("task_mb", "task's own MiB", "{:.0f}"),
           ("disk_mb", "disk MiB", "{:.2f}"), ("files", "files", "{:.0f}"))


def ratio(big: float, small: float) -> float | None:
    return big / small if small else None


def render(sizes: list[int], tables: dict[int, dict[str, dict[str, float]]]) -> tuple[str, list[str]]:
    """The table (each cell `N / 10N (ratio)`) and the stages that grow too fast."""
    small, big = sizes
    lines = [f"{'stage':<14}" + "".join(f"{label:>26}" for _, label, _ in COLUMNS)]
    flagged = []
    for stage in tables[small]:
        a, b = tables[small][stage], tables[big].get(stage)
        if b is None:
            continue
        cells = []
        for key, _, fmt in COLUMNS:
            r = ratio(b[key], a[key])
            cells.append(f"{fmt.format(a[key])} / {fmt.format(b[key])} ({'-' if r is None else f'{r:.1f}x'})")
        lines.append(f"{stage:<14}" + "".join(f"{cell:>26}" for cell in cells))
        cpu_growth = ratio(b["cpu_s"], a["cpu_s"])
        memory_growth = ratio(b["peak_rss_mb"], a["peak_rss_mb"])
        if stage != "run" and cpu_growth is not None and cpu_growth > CPU_GROWTH_LIMIT * big / small / 10:
            flagged.append(f"{stage}: CPU {a['cpu_s']:.1f}s -> {b['cpu_s']:.1f}s = {cpu_growth:.1f}x for "
                           f"{big / small:.0f}x the queries (limit {CPU_GROWTH_LIMIT * big / small / 10:.0f}x)")
        if stage != "run" and memory_growth is not None and memory_growth > MEMORY_GROWTH_LIMIT:
            flagged.append(f"{stage}: largest task's peak RSS {a['peak_rss_mb']:.0f} -> {b['peak_rss_mb']:.0f} MiB = "
                           f"{memory_growth:.2f}x at the same shard size (limit {MEMORY_GROWTH_LIMIT}x)")
    return "\n".join(lines), flagged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="the smaller size N; the larger is 10N (default 10,000)")
    parser.add_argument("--shard-size", type=int, default=250, help="queries per shard at both sizes (default 250)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic queries (default 0)")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "rehearsal-bench",
                        help="folder for both runs (replaced; default runs/rehearsal-bench)")
    parser.add_argument("--json", type=Path, help="where to save the table (default WORK/rehearsal.json)")
    parser.add_argument("--one-size", type=int, help=argparse.SUPPRESS)  # a child run: one size, rows to WORK
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.one_size:
        rows = rehearse(args.work, args.one_size, args.shard_size, args.seed)
        (args.work / f"n{args.one_size}.rows.json").write_text(json.dumps(rows))
        return 0
    sizes = [args.n, 10 * args.n]
    tables = {}
    for n in sizes:  # each size in a fresh process, so in-process tasks start from the same memory at both sizes
        subprocess.run([sys.executable, __file__, "--one-size", str(n), "--shard-size", str(args.shard_size),
                        "--seed", str(args.seed), "--work", str(args.work)], check=True)
        tables[n] = json.loads((args.work / f"n{n}.rows.json").read_text())
    table, flagged = render(sizes, tables)
    print(f"\nrehearsal of jobs/rehearsal.yaml at N={sizes[0]} and 10N={sizes[1]}, {args.shard_size} queries per shard")
    print(f"CPU: {cpu_description()}; load average at the end: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    print("each cell: N / 10N; ratio columns: 10N / N\n")
    print(table)
    print("\nsuperlinear CPU or memory growing with the corpus:" if flagged else "\nno stage superlinear, no task's "
          "peak memory growing with the corpus")
    for line in flagged:
        print("  " + line)
    out = args.json or args.work / "rehearsal.json"
    out.write_text(json.dumps({"sizes": sizes, "shard_size": args.shard_size, "cpu": cpu_description(),
                               "stages": {str(n): tables[n] for n in sizes}, "flagged": flagged}, indent=1))
    print(f"\ntable saved: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
