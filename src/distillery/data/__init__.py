"""Data that ships with the package: the quickstart query sample and the public evaluation benchmarks.

The benchmark files and their provenance are described in `benchmarks/README.md` beside this module.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DATA = Path(__file__).resolve().parent

BENCHMARK_FILES: dict[str, str] = {
    "aime24": "aime24/aime24.jsonl",
    "aime25": "aime25/aime25.jsonl",
    "math500": "math500/math500.jsonl",
    "ifeval": "ifeval/ifeval.jsonl",
    "livecodebench": "livecodebench/lcb_v5_public_tests.jsonl",
}
"""Built-in benchmark names and their files, relative to a benchmarks folder with the packaged layout."""


def benchmarks_dir(configured: Path | None = None) -> Path:
    """The folder relative benchmark files are read from: the configured one, else $DISTILLERY_BENCHMARKS, else
    the copy packaged with distillery."""
    if configured is not None:
        return configured
    env = os.environ.get("DISTILLERY_BENCHMARKS")
    return Path(env) if env else PACKAGE_DATA / "benchmarks"


def quickstart_queries() -> Path:
    """The bundled query sample of the embedded default."""
    return PACKAGE_DATA / "quickstart" / "queries.jsonl"
