"""Served teachers in `distillery status`: per replica its job's scheduler state, its own state and endpoint,
and, for a healthy one, requests finished per second since it became healthy and its queue (vLLM's /metrics)."""

from __future__ import annotations

import time
from typing import Any

from distillery.core.recipe import Recipe
from distillery.core.store import RunDir
from distillery.serve.health import load
from distillery.serve.records import read_records


def replica_rows(run: RunDir, recipe: Recipe, scheduler_states: dict[tuple[str, int], str]) -> list[dict[str, Any]]:
    rows = []
    for teacher in recipe.teachers:
        if teacher.serve is None:
            continue
        records = {record.index: record for record in read_records(run, teacher.name)}
        for index in range(teacher.serve.replicas):
            record = records.get(index)
            row: dict[str, Any] = {"teacher": teacher.name, "replica": index,
                                   "job_state": scheduler_states.get((f"serve/{teacher.name}:replica", index), "-"),
                                   "state": record.state if record else "not started", "job_id": None,
                                   "endpoint": None, "requests_per_s": None, "running": None, "waiting": None}
            if record is not None:
                row.update(job_id=record.job_id, endpoint=record.base_url)
                figures = load(f"http://{record.host}:{record.port}", 3.0) if record.state == "healthy" else None
                if figures is not None:
                    row.update(requests_per_s=round(figures["finished"] / max(time.time() - record.since, 1.0), 3),
                               running=int(figures["running"]), waiting=int(figures["waiting"]))
            rows.append(row)
    return rows


def render_replicas(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    lines = ["", f"{'served teacher':<24} {'replica':>7} {'job':>10} {'job state':<11} {'state':<11} {'req/s':>6} "
                 f"{'running':>7} {'queue':>5}  endpoint"]
    for row in rows:
        def figure(name: str) -> str:
            return "-" if row[name] is None else str(row[name])
        lines.append(f"{row['teacher']:<24} {row['replica']:>7} {row['job_id'] or '-':>10} {row['job_state']:<11} "
                     f"{row['state']:<11} {figure('requests_per_s'):>6} {figure('running'):>7} {figure('waiting'):>5}  "
                     f"{row['endpoint'] or '-'}")
    return "\n".join(lines)
