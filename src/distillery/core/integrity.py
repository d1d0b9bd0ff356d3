"""Trust what is on disk only when it matches its manifest.

A shard's manifest records the record count, the size in bytes and the sha256 of its output. Every read of a
finished shard and every freshness check compares the size (one `stat`); the record count is compared as the
records are read; `distillery verify RUN` recomputes every hash. A shard that was truncated (a rank that ran out
of disk) or edited after its manifest was written is stale: it is rerun, never read.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from distillery.core.store import Manifest, RunDir, ShardPaths, open_text


def size_mismatch(paths: ShardPaths, manifest: Manifest) -> str | None:
    """Why a record shard's output cannot be what its manifest describes (missing, or another size); None if it
    can. Manifests of task stages (no JSONL output) and of older versions (no size) pass."""
    if manifest.size_bytes is None:
        return None
    try:
        size = paths.output.stat().st_size
    except FileNotFoundError:
        return f"output {paths.output.name} is missing"
    if size != manifest.size_bytes:
        return f"output {paths.output.name} is {size} bytes, its manifest says {manifest.size_bytes}"
    return None


def content_mismatch(paths: ShardPaths, manifest: Manifest) -> str | None:
    """The full check: record count and sha256 of the output's content against the manifest."""
    problem = size_mismatch(paths, manifest)
    if problem is not None or manifest.size_bytes is None:
        return problem
    digest = hashlib.sha256()
    count = 0
    with open_text(paths.output) as handle:
        for line in handle:
            digest.update(line.encode("utf-8"))
            count += 1
    if count != manifest.kept:
        return f"output holds {count} records, its manifest says {manifest.kept}"
    if digest.hexdigest() != manifest.sha256:
        return "output content differs from its manifest's sha256 (edited after it was written)"
    return None


@dataclass(frozen=True)
class Finding:
    manifest: Path
    problem: str


def verify_run(run: RunDir) -> tuple[int, list[Finding]]:
    """Every shard manifest of the run checked in full: (shards checked, findings)."""
    checked = 0
    findings: list[Finding] = []
    for manifest_path in run.manifests():
        manifest = Manifest.load(manifest_path)
        compress = manifest_path.with_name(manifest_path.name.replace(".done.json", ".jsonl.gz")).exists()
        paths = ShardPaths(manifest_path.parent, manifest.shard_index, compress)
        checked += 1
        problem = content_mismatch(paths, manifest)
        if problem is not None:
            findings.append(Finding(manifest_path, problem))
    return checked, findings
