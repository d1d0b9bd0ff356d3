"""Ingest's per-row cost against a bare `json.loads` of the same lines.

The packaged benchmark files (MATH-500, AIME, LiveCodeBench, IFEval: real layouts, long and short rows) are
concatenated --copies times into one JSONL file and one gzip file, in a temporary folder. Timed, alternating
--repeats times and keeping the fastest of each:
- bare: split the bytes on newlines and `json.loads` each line (Python's gzip for the .gz file);
- read: `read_rows` (strict JSON: duplicate keys, NaN, overflow, depth and surrogate checks; BOM/CRLF handling;
  our own gzip reader that survives truncation);
- ingest: `read_rows` + `parse_row` (layout detection, typed coercion, the Query record as JSON).
Prints rows/s of each and the ratios read / bare and ingest / bare. Compare ratios within a run.

    python benchmarks/bench_ingest.py [--copies 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from distillery.data import benchmarks_dir
from distillery.ingest.readers import FileStats, read_rows
from distillery.ingest.stage import InputSpec, parse_row

FILES = ("math500/math500.jsonl", "aime24/aime24.jsonl", "livecodebench/lcb_v5_public_tests.jsonl",
         "ifeval/input_data.jsonl")


def bare(path: Path) -> int:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        return sum(1 for line in handle if line.strip() and json.loads(line) is not None)


def read(path: Path) -> int:
    return sum(1 for _ in read_rows(path, FileStats(str(path))))


def ingest(path: Path) -> int:
    spec = InputSpec(path=path, category="math")
    return sum(1 for row in read_rows(path, FileStats(str(path))) if parse_row(row, spec)[0] is not None)


def timed(function: Callable[[Path], int], path: Path) -> tuple[float, int]:
    start = time.perf_counter()
    rows = function(path)
    return time.perf_counter() - start, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = b"".join((benchmarks_dir() / name).read_bytes() for name in FILES) * args.copies
    with tempfile.TemporaryDirectory() as tmp:
        plain, zipped = Path(tmp) / "rows.jsonl", Path(tmp) / "rows.jsonl.gz"
        plain.write_bytes(data)
        zipped.write_bytes(gzip.compress(data))
        for path in (plain, zipped):
            best: dict[str, float] = {}
            counts: dict[str, int] = {}
            for _ in range(args.repeats):
                for name, function in (("bare", bare), ("read", read), ("ingest", ingest)):
                    seconds, counts[name] = timed(function, path)
                    best[name] = min(best.get(name, seconds), seconds)
            assert len(set(counts.values())) == 1, counts
            rows = counts["bare"]
            print(f"{path.name}: {rows} rows, {len(data) / 2**20:.1f} MiB")
            for name in ("bare", "read", "ingest"):
                print(f"  {name:7s} {rows / best[name]:10.0f} rows/s  ratio {best[name] / best['bare']:.2f}")


if __name__ == "__main__":
    main()
