"""A small append-only history of what `distillery status` saw, in the run directory, for the status page's plots
of throughput and acceptance over time (manifests hold when each shard finished, not what the run looked like).

One JSON line per `status` call: the time and, per step x teacher x phase, the counts the plots need. The file
stays under `MAX_ENTRIES` lines: when it grows past them it is rewritten (atomically) keeping every other entry
of the older half, so the history always spans the whole run at a coarser step for its early part.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from distillery.core.store import RunDir, atomic_write
from distillery.ops.status import GroupStatus

logger = logging.getLogger("distillery.status")

MAX_ENTRIES = 400


def snapshot(statuses: list[GroupStatus], now: float | None = None) -> dict[str, Any]:
    """One history entry: per group, shards done, records in/kept/rejected, engine tokens/s, acceptance."""
    groups = {}
    for status in statuses:
        tokens = status.engine.get("tokens_per_s")
        groups[status.group.key] = {
            "done": status.states["done"], "shards": len(status.group.shards), "inputs": status.inputs,
            "partial": status.partial_items, "kept": status.kept, "rejected": status.rejected,
            "tokens_per_s": round(sum(tokens) / len(tokens), 2) if tokens else None,
            "acceptance": {category: [counts["accepted"], counts["done"]]
                           for category, counts in sorted(status.acceptance.items())},
        }
    return {"time": round(time.time() if now is None else now, 3), "groups": groups}


def append(run: RunDir, statuses: list[GroupStatus], now: float | None = None) -> None:
    """Add what `statuses` show to the run's history; a run directory that cannot be written is only logged."""
    path = run.status_history()
    line = json.dumps(snapshot(statuses, now), separators=(",", ":")) + "\n"
    try:
        with path.open("a+b") as handle:  # appends go to the end whatever the read position
            if handle.tell():
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    line = "\n" + line  # the last line was cut short by a killed writer: start a new one
            handle.write(line.encode("utf-8"))
        _bound(path)
    except OSError as error:
        logger.warning("status history not kept (%s): the page's plots show only what this call sees", error)


def _bound(path: Path) -> None:
    with path.open(encoding="utf-8") as handle:
        lines = handle.readlines()
    if len(lines) <= MAX_ENTRIES:
        return
    half = len(lines) // 2
    with atomic_write(path) as out:
        out.write("".join(lines[:half:2] + lines[half:]))


def read(run: RunDir) -> list[dict[str, Any]]:
    """Every entry, oldest first; a line cut short by a killed writer is skipped."""
    entries = []
    path = run.status_history()
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return entries
