"""Peak memory and time of `distillery export` on a faked step of N traces (MATH-500 problems, cycled) over S
shards, against the naive way measured in the same run: read every record into a list, then write one table, or
draw the sample from that list.

- `parquet`: AM rows streamed into Parquet in row groups (`export_step(..., container="parquet")`);
  baseline `parquet-naive`: every AM row in memory, one `pyarrow.Table`, `pq.write_table`.
- `native`: the run's own records streamed into Parquet with their typed columns (query id, category, think,
  answer, attempts, token counts, ...) beside the full record; compared with `parquet` (AM rows, streamed), the
  other export that validates every record, to show what the typed columns cost.
- `sample`: `--limit K` drawn from the manifests' counts, reading only the chosen lines' shards up to their last
  chosen line; baseline `sample-naive`: every record in a list, then `random.sample`.

Each mode runs in its own process, so its peak RSS (ru_maxrss) is its own.

    python benchmarks/bench_export.py [--records 100000] [--shards 8] [--limit 1000] [--run DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from distillery.ops.exporting import convert_record, export_step
from distillery.ops.parquet import parquet_row, schema
from distillery.core.recipe import parse_recipe
from distillery.schema.records import Attempt, Reference, Trace, make_query
from distillery.core.inputs import RunInputs
from distillery.core.store import RunDir
from distillery.data import benchmarks_dir
from distillery.testing import finish_shard
from distillery.testing.stages import trace_recipe

logger = logging.getLogger("bench_export")
MODES = ("parquet", "parquet-naive", "native", "sample", "sample-naive")


def _recipe_data(run_dir: Path, shards: int) -> dict:
    return trace_recipe(run_dir, {}, num_shards=shards)


def build_run(run_dir: Path, records: int, shards: int) -> None:
    lines = (benchmarks_dir() / "math500" / "math500.jsonl").read_text(encoding="utf-8").splitlines()
    problems = [json.loads(line) for line in lines]
    run = RunDir(run_dir)
    run.root.mkdir(parents=True, exist_ok=True)
    run.recipe.write_text(json.dumps(_recipe_data(run_dir, shards)))
    per_shard = -(-records // shards)
    for shard_index in range(shards):
        def traces(start: int = shard_index * per_shard):
            for number in range(start, min(start + per_shard, records)):
                problem = problems[number % len(problems)]
                query = make_query("math", [{"role": "user", "content": f"({number}) {problem['problem']}"}],
                                   Reference(answer=problem["answer"]), source="math500")
                attempt = Attempt(index=0, seed=number, response=f"<think>{problem['solution']}</think>\n\n"
                                  f"$\\boxed{{{problem['answer']}}}$", score=1.0, passed=True, verifier="math_verify")
                yield Trace(query=query, teacher="t1", attempts=[attempt], accepted=0).model_dump(mode="json")
        finish_shard(run, "traces", "t1", shard_index, traces(), num_shards=shards)


def run_mode(mode: str, run_dir: Path, shards: int, limit: int, output: Path) -> None:
    recipe = parse_recipe(_recipe_data(run_dir, shards))
    run = RunDir(run_dir)
    if mode in ("parquet", "native"):
        export_step(run, recipe, "traces", "t1", "am" if mode == "parquet" else "native", output, container="parquet")
    elif mode == "sample":
        export_step(run, recipe, "traces", "t1", "am", output, limit=limit, seed=0)
    else:
        records = [item.record for item in RunInputs(run, recipe, "traces", "t1").everything()]
        if mode == "parquet-naive":
            rows = [parquet_row(convert_record(record, "am"), "am") for record in records]
            pq.write_table(pa.Table.from_pylist(rows, schema=schema("am")), output)
        else:
            chosen = random.Random(0).sample(records, limit)
            output.write_text("".join(json.dumps(convert_record(r, "am")) + "\n" for r in chosen))


def measure(mode: str, run_dir: Path, shards: int, limit: int, out_dir: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one mode, run in a fresh process."""
    suffix = "jsonl" if mode.startswith("sample") else "parquet"
    command = [sys.executable, __file__, "--child", mode, "--run", str(run_dir), "--shards", str(shards),
               "--limit", str(limit), "--output", str(out_dir / f"{mode}.{suffix}")]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    seconds, rss_kib = done.stdout.split()
    return float(seconds), int(rss_kib) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--run", type=Path, help="run folder to build (default: a temporary one)")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        start = time.perf_counter()
        run_mode(args.child, args.run, args.shards, args.limit, args.output)
        print(f"{time.perf_counter() - start:.3f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = args.run or Path(scratch) / "run"
        if not (run_dir / "recipe.yaml").exists():
            start = time.perf_counter()
            build_run(run_dir, args.records, args.shards)
            logger.info("built %d traces in %d shards in %.1fs", args.records, args.shards, time.perf_counter() - start)
        results = {mode: measure(mode, run_dir, args.shards, args.limit, Path(scratch)) for mode in MODES}
    for ours, naive in (("parquet", "parquet-naive"), ("native", "parquet"), ("sample", "sample-naive")):
        (t_ours, m_ours), (t_naive, m_naive) = results[ours], results[naive]
        logger.info("%-8s %7.2fs %7.0f MiB | %-14s %7.2fs %7.0f MiB | time x%.2f, peak memory x%.2f",
                    ours, t_ours, m_ours, naive, t_naive, m_naive, t_ours / t_naive, m_ours / m_naive)


if __name__ == "__main__":
    main()
