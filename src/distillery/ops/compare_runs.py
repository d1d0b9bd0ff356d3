"""Whether two runs of one recipe made the same data: every finished shard's manifest of one run against the
other's, by what the shard wrote (the sha256 of its kept records' content, the digest of their ids, its counts),
never by how or where it ran (elapsed time, resources, resumed items). A local run and a SLURM run of the same
recipe, seed and shard count must agree shard for shard."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from distillery.core.runner import load_run_recipe
from distillery.core.store import Manifest, RunDir

FINGERPRINT = ("sha256", "output_ids_digest", "inputs", "kept", "rejected", "quarantined")
"""The manifest fields that say what a shard wrote."""

ShardKey = tuple[str, str | None, int]
"""(step, lineage, shard index)."""


def fingerprints(run: RunDir) -> dict[ShardKey, tuple]:
    """Every finished shard of the run -> the values of its manifest's `FINGERPRINT` fields."""
    found = {}
    for path in run.manifests():
        manifest = Manifest.load(path)
        found[(manifest.stage, manifest.teacher, manifest.shard_index)] = tuple(
            getattr(manifest, name) for name in FINGERPRINT)
    return found


@dataclass
class StepComparison:
    step: str
    shards: int = 0
    identical: int = 0
    different: list[str] = field(default_factory=list)
    """`lineage shard N: field` for each shard that differs, or that only one run finished."""


def compare_runs(first: Path | str, second: Path | str) -> list[StepComparison]:
    """Per step (in the first run's recipe order), its shards and how many are identical."""
    first, second = RunDir(first), RunDir(second)
    a, b = fingerprints(first), fingerprints(second)
    order = {spec.step: i for i, spec in enumerate(load_run_recipe(first).steps)}
    steps: dict[str, StepComparison] = {}
    for key in sorted(a.keys() | b.keys(), key=lambda k: (order.get(k[0], len(order)), k[0], k[1] or "", k[2])):
        step, lineage, shard = key
        row = steps.setdefault(step, StepComparison(step))
        row.shards += 1
        where = f"{lineage + ' ' if lineage else ''}shard {shard}"
        if key not in a or key not in b:
            row.different.append(f"{where}: only in the {'second' if key not in a else 'first'} run")
        elif a[key] == b[key]:
            row.identical += 1
        else:
            fields = [name for name, x, y in zip(FINGERPRINT, a[key], b[key]) if x != y]
            row.different.append(f"{where}: {', '.join(fields)}")
    return list(steps.values())


def render_comparison(rows: list[StepComparison], shown: int = 5) -> str:
    """A line per step (shards, identical, different), then the first `shown` differences of each step."""
    lines = [f"{'step':<16} {'shards':>7} {'identical':>10} {'different':>10}"]
    for row in rows:
        lines.append(f"{row.step:<16} {row.shards:>7} {row.identical:>10} {len(row.different):>10}")
    for row in rows:
        lines += [f"  {row.step}: {difference}" for difference in row.different[:shown]]
    total = sum(row.shards for row in rows)
    lines.append(f"{'total':<16} {total:>7} {sum(row.identical for row in rows):>10} "
                 f"{sum(len(row.different) for row in rows):>10}")
    return "\n".join(lines)
