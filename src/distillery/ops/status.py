"""The status view: every step x teacher x phase with shard states, record counts, throughput and ETA.

Built from manifests (done), journals (partial: items finished so far) and, for SLURM runs, one sacct call.
Rendered as a plain-text table (shard states grouped into ranges, so 10,000 shards stay readable, and the most
common reject reasons per step) or as JSON for dashboards.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from distillery.core.plan import GroupInspector, TaskGroup, build_groups
from distillery.core.recipe import Recipe
from distillery.core.inputs import DigestCache
from distillery.core.store import RunDir


@dataclass
class GroupStatus:
    group: TaskGroup
    states: Counter = field(default_factory=Counter)
    inputs: int = 0
    kept: int = 0
    rejected: int = 0
    quarantined: int = 0
    partial_items: int = 0
    elapsed_s: float = 0.0
    stale: list[str] = field(default_factory=list)
    not_reconciled: list[int] = field(default_factory=list)
    shard_states: list[str] = field(default_factory=list)
    """Each shard's state label, in shard order."""
    reject_reasons: Counter = field(default_factory=Counter)
    """Reject reasons (numbers masked) summed over finished shards."""
    warnings: list[str] = field(default_factory=list)
    engine: dict[str, list[float]] = field(default_factory=dict)
    """Per finished shard, the engine figures a generation shard records (tokens/s, idle share, KV use, ...)."""
    variant: Counter = field(default_factory=Counter)
    """A dataset variant's counts summed over finished shards (queries needing new attempts, attempts rescreened)."""
    rule: str = ""
    """A dataset variant's rule, as its manifests describe it."""
    acceptance: dict[str, Counter] = field(default_factory=dict)
    """Per category, queries a generation shard finished (`done`) and how many of them were `accepted`."""

    @property
    def throughput(self) -> float:
        """Input items per task-second over finished shards."""
        return self.inputs / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        done = self.states["done"]
        remaining = len(self.group.shards) - done
        if done == 0 or remaining == 0:
            return None if remaining else 0.0
        return self.elapsed_s / done * remaining


def collect_status(run: RunDir, recipe: Recipe, scheduler_states: dict[tuple[str, int], str] | None = None,
                   check_inputs: bool = True) -> list[GroupStatus]:
    result = []
    known_digests: DigestCache = {}
    for group in build_groups(recipe):
        status = GroupStatus(group)
        inspector = GroupInspector(run, recipe, group, known_digests)
        for shard_index in group.shards:
            state = inspector.state(shard_index, check_inputs=check_inputs)
            label = state.state
            scheduler = (scheduler_states or {}).get((group.key, shard_index))
            if label != "done" and scheduler:
                label = scheduler.lower()
            status.states[label] += 1
            status.shard_states.append(label)
            status.partial_items += state.journal_items
            if state.state == "stale":
                status.stale.append(f"shard {shard_index}: {state.detail}")
            if state.marker is not None:
                status.inputs += int(state.marker.get("inputs", 0))
                status.elapsed_s += float(state.marker.get("elapsed_s", 0.0))
            if state.manifest is not None:
                manifest = state.manifest
                status.inputs += manifest.inputs
                status.kept += manifest.kept
                status.rejected += manifest.rejected
                status.quarantined += manifest.quarantined
                status.elapsed_s += manifest.elapsed_s
                _add_stats(status, shard_index, manifest.stats)
                if not manifest.reconciles():
                    status.not_reconciled.append(shard_index)
        result.append(status)
    return result


def _add_stats(status: GroupStatus, shard_index: int, stats: dict[str, Any]) -> None:
    """What a finished shard's stats add to its group's line: reject reasons, engine and variant figures, warnings."""
    if stats.get("reject_reasons"):
        status.reject_reasons.update(stats["reject_reasons"])
    figures = {**(stats.get("engine_last") or {}), **stats}  # engine_last: the backend's own, e.g. an HTTP client's
    for name in figures.keys() & ENGINE_FIGURES.keys():
        if isinstance(figures[name], int | float):
            status.engine.setdefault(name, []).append(float(figures[name]))
    for name in stats.keys() & VARIANT_FIGURES.keys():
        status.variant[name] += int(stats[name])
    if "rule" in stats:
        status.rule = str(stats["rule"])
    for category, figures in (stats.get("acceptance_by_category") or {}).items():
        status.acceptance.setdefault(category, Counter()).update(
            {"done": int(figures.get("done", 0)), "accepted": int(figures.get("accepted", 0))})
    status.warnings += [f"shard {shard_index}: input file {path} ended early (truncated or damaged)"
                        for path in stats.get("truncated_files", [])]


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


ENGINE_FIGURES = {
    "tokens_per_s": "{:.0f} tok/s", "engine_idle_fraction": "idle {:.1%}", "kv_cache_usage_mean": "KV {:.0%}",
    "requests_in_flight_mean": "{:.0f} in flight", "engine_running_mean": "engine runs {:.1f}",
    "engine_waiting_mean": "waits {:.1f} per step",
    "engine_starved_step_share": "free slots while due in {:.1%} of steps",
    "engine_starved_s": "{:.0f}s starved", "engine_time_to_full_s": "full after {:.1f}s",
    "verify_queue_max": "verify queue max {:.0f}", "backpressure_s": "back-pressure {:.0f}s",
    "accepted_per_hour": "{:,.0f} accepted/h", "concurrency_limit": "client concurrency {:.0f}",
}
"""Figures of a generation shard's stats shown per step (mean over shards; back-pressure summed)."""


VARIANT_FIGURES = {
    "needs_new_attempts": "{} need new attempts", "exhausted": "{} used up their attempts",
    "other_attempt": "{} take another attempt", "rescreened": "{} filtered again",
    "reused_verdicts": "{} verdicts reused",
}
"""Counts a `variants` shard records, shown per lineage."""


def variant_summary(status: GroupStatus) -> str:
    counts = "; ".join(fmt.format(status.variant[name]) for name, fmt in VARIANT_FIGURES.items()
                       if status.variant[name])
    return ": ".join(part for part in (status.rule, counts) if part)


def engine_summary(engine: dict[str, list[float]]) -> str:
    parts = []
    for name, fmt in ENGINE_FIGURES.items():
        values = engine.get(name)
        if values:
            value = sum(values) if name in ("backpressure_s", "engine_starved_s") else sum(values) / len(values)
            parts.append(fmt.format(value))
    return ", ".join(parts)


def state_ranges(labels: list[str]) -> str:
    """Shard states as ranges: `0-41 done, 42 running, 43-9999 pending`."""
    parts: list[str] = []
    start = 0
    for index in range(1, len(labels) + 1):
        if index == len(labels) or labels[index] != labels[start]:
            span = f"{start}" if index - 1 == start else f"{start}-{index - 1}"
            parts.append(f"{span} {labels[start]}")
            start = index
    return ", ".join(parts)


def status_json(statuses: list[GroupStatus]) -> list[dict[str, Any]]:
    """One object per group, for dashboards (`distillery status --json`)."""
    return [{
        "group": status.group.key, "step": status.group.step, "teacher": status.group.lineage,
        "phase": status.group.phase, "shards": len(status.group.shards), "states": dict(status.states),
        "shard_states": state_ranges(status.shard_states), "inputs": status.inputs, "kept": status.kept,
        "rejected": status.rejected, "quarantined": status.quarantined, "partial_items": status.partial_items,
        "elapsed_s": round(status.elapsed_s, 3), "items_per_s": round(status.throughput, 3), "eta_s": status.eta_s,
        "reject_reasons": dict(status.reject_reasons.most_common()), "stale": status.stale,
        "not_reconciled": status.not_reconciled, "warnings": status.warnings,
        "engine": {name: round(sum(v) / len(v), 4) for name, v in status.engine.items()},
        "variant": {"rule": status.rule, **status.variant} if status.rule else None,
        "acceptance": {category: dict(counts) for category, counts in sorted(status.acceptance.items())},
    } for status in statuses]


def render_status(statuses: list[GroupStatus]) -> str:
    """A plain-text table (what operators paste into tickets)."""
    width = max([34, *(len(status.group.key) + 1 for status in statuses)])
    header = f"{'step/teacher:phase':<{width}} {'shards':>7} {'done':>5} {'state':<28} {'in':>8} {'kept':>8} {'rej':>6} " \
             f"{'quar':>5} {'items/s':>8} {'eta':>7}"
    lines = [header, "-" * len(header)]
    for status in statuses:
        others = ", ".join(f"{k} {v}" for k, v in sorted(status.states.items()) if k != "done") or "all done"
        if status.partial_items:
            others += f" ({status.partial_items} items in journals)"
        lines.append(f"{status.group.key:<{width}} {len(status.group.shards):>7} {status.states['done']:>5} {others:<28} "
                     f"{status.inputs:>8} {status.kept:>8} {status.rejected:>6} {status.quarantined:>5} "
                     f"{status.throughput:>8.1f} {duration(status.eta_s):>7}")
        if others != "all done" and len(status.shard_states) > 1:
            lines.append(f"    shards: {state_ranges(status.shard_states)[:300]}")
        for stale in status.stale[:5]:
            lines.append(f"    stale: {stale}")
        if len(status.stale) > 5:
            lines.append(f"    ... and {len(status.stale) - 5} more stale shards")
        if status.engine:
            lines.append(f"    rates: {engine_summary(status.engine)}")
        if status.rule and status.group.phase == "process":
            lines.append(f"    variant: {variant_summary(status)}")
        for reason, count in status.reject_reasons.most_common(3):
            lines.append(f"    rejected {count}x: {reason}")
        for warning in status.warnings[:5]:
            lines.append(f"    WARNING {warning}")
        if status.not_reconciled:
            lines.append(f"    COUNTS DO NOT RECONCILE in shards {status.not_reconciled}")
    return "\n".join(lines)
