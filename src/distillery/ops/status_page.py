"""`distillery status --html FILE`: one self-contained HTML page of a run's status (no network: styles inline,
plots as inline SVG), reloading itself under `--watch`.

The page holds the status table (a row per step x teacher x phase, with shard states, counts, throughput, ETA,
engine rates, acceptance and links to the shard logs) and two plots over time, drawn from the run's status
history (`distillery.ops.status_history`): records processed per second, and acceptance.
"""

from __future__ import annotations

import io
import os
import re
import time
from html import escape
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from distillery.core.store import RunDir, atomic_write  # noqa: E402
from distillery.ops.status import GroupStatus, duration, engine_summary, state_ranges  # noqa: E402

MAX_LOG_LINKS = 6
"""Shard logs linked per row (unfinished shards first); the row also links the whole log folder."""

_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)
"""matplotlib's RDF block (creator, date): nothing a reader of the page needs."""

MAX_PLOTTED = 12
"""Most lines per plot (the groups with the most records)."""

STYLE = """body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}th{background:#eee}td.n{text-align:right}
tr.done td:first-child{border-left:4px solid #2a2}tr.todo td:first-child{border-left:4px solid #d90}
.note{color:#a40;font-size:12px}.plots{display:flex;flex-wrap:wrap;gap:1em}.plots svg{max-width:48em;height:auto}"""


def _log_links(run: RunDir, status: GroupStatus, page_dir: Path) -> str:
    group = status.group
    folder = run.log_dir(group.step, group.lineage)
    if not folder.is_dir():
        return "-"
    pattern = "merge*.log" if group.phase == "merge" else f"shard-*.{group.phase}*.log"
    logs = sorted(folder.glob(pattern))
    state = dict(zip(group.shards, status.shard_states, strict=False))
    logs.sort(key=lambda log: state.get(_shard_index(log), "") == "done")
    links = [f'<a href="{escape(os.path.relpath(log, page_dir))}">{escape(log.stem)}</a>'
             for log in logs[:MAX_LOG_LINKS]]
    links.append(f'<a href="{escape(os.path.relpath(folder, page_dir))}">all {len(logs)}</a>')
    return "<br>".join(links)


def _shard_index(log: Path) -> int:
    digits = log.name.split(".", 1)[0].removeprefix("shard-")
    return int(digits) if digits.isdigit() else -1


def _acceptance(status: GroupStatus) -> str:
    return ", ".join(f"{category} {counts['accepted']}/{counts['done']}"
                     for category, counts in sorted(status.acceptance.items()) if counts["done"])


def _notes(status: GroupStatus) -> str:
    notes = [f"stale: {stale}" for stale in status.stale[:3]] + status.warnings[:3]
    if status.not_reconciled:
        notes.append(f"counts do not reconcile in shards {status.not_reconciled}")
    notes += [f"rejected {count}x: {reason}" for reason, count in status.reject_reasons.most_common(2)]
    return "<br>".join(f'<span class="note">{escape(note)}</span>' for note in notes)


def status_table(run: RunDir, statuses: list[GroupStatus], page_dir: Path) -> str:
    head = ["step/teacher:phase", "shards", "done", "shard states", "in", "kept", "rejected", "quarantined",
            "items/s", "ETA", "engine", "acceptance", "notes", "logs"]
    rows = []
    for status in statuses:
        done = status.states["done"] == len(status.group.shards)
        cells = [f"<td>{escape(status.group.key)}</td>",
                 *(f'<td class="n">{value}</td>' for value in (len(status.group.shards), status.states["done"])),
                 f"<td>{escape(state_ranges(status.shard_states)[:300])}</td>",
                 *(f'<td class="n">{value}</td>' for value in (status.inputs, status.kept, status.rejected,
                                                               status.quarantined, f"{status.throughput:.1f}",
                                                               duration(status.eta_s))),
                 f"<td>{escape(engine_summary(status.engine))}</td>", f"<td>{escape(_acceptance(status))}</td>",
                 f"<td>{_notes(status)}</td>", f"<td>{_log_links(run, status, page_dir)}</td>"]
        rows.append(f'<tr class="{"done" if done else "todo"}" data-group="{escape(status.group.key)}">'
                    + "".join(cells) + "</tr>")
    return ("<table id=status><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>\n"
            + "\n".join(rows) + "</table>")


def _svg(series: dict[str, list[tuple[float, float]]], title: str, ylabel: str) -> str:
    """A line plot of {label: [(unix time, value)]} as an inline SVG element (text kept as text)."""
    with plt.rc_context({"svg.fonttype": "none"}):
        figure, axes = plt.subplots(figsize=(7.5, 3.6))
        start = min((t for points in series.values() for t, _ in points), default=0.0)
        for label, points in series.items():
            axes.plot([(t - start) / 60 for t, _ in points], [v for _, v in points], marker="o", markersize=3,
                      label=label)
        axes.set(title=title, xlabel="minutes since the first status in the history", ylabel=ylabel)
        if series:
            axes.legend(fontsize=7, loc="best")
        else:
            axes.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=axes.transAxes)
        figure.tight_layout()
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg")
        plt.close(figure)
    text = buffer.getvalue()
    return _METADATA.sub("", text[text.index("<svg"):])


def throughput_series(history: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """Per group, records processed per wall-clock second between consecutive history entries."""
    series: dict[str, list[tuple[float, float]]] = {}
    for before, after in zip(history, history[1:]):
        elapsed = after["time"] - before["time"]
        if elapsed <= 0:
            continue
        for key, now in after["groups"].items():
            then = before["groups"].get(key)
            if then is not None:
                processed = now["inputs"] + now["partial"] - then["inputs"] - then["partial"]
                series.setdefault(key, []).append((after["time"], max(processed, 0) / elapsed))
    return series


def acceptance_series(history: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """Per generation group and category, the accepted share so far; for a run with no generation figures yet,
    each group's kept share of its finished records."""
    series: dict[str, list[tuple[float, float]]] = {}
    for entry in history:
        for key, group in entry["groups"].items():
            for category, (accepted, done) in group.get("acceptance", {}).items():
                if done:
                    series.setdefault(f"{key} {category}", []).append((entry["time"], accepted / done))
    if series:
        return series
    for entry in history:
        for key, group in entry["groups"].items():
            if group["kept"] + group["rejected"]:
                series.setdefault(key, []).append((entry["time"], group["kept"] / (group["kept"] + group["rejected"])))
    return series


def _busiest(series: dict[str, list[tuple[float, float]]]) -> dict[str, list[tuple[float, float]]]:
    """The `MAX_PLOTTED` series with the highest peaks; series that stayed at zero are left out."""
    peaks = {key: max(value for _, value in points) for key, points in series.items()}
    ranked = sorted((key for key, peak in peaks.items() if peak > 0), key=lambda key: -peaks[key])
    return {key: series[key] for key in sorted(ranked[:MAX_PLOTTED])}


def render_page(run: RunDir, run_name: str, statuses: list[GroupStatus], history: list[dict[str, Any]],
                page: Path, refresh_s: float | None = None) -> str:
    refresh = f'<meta http-equiv="refresh" content="{max(1, round(refresh_s))}">' if refresh_s else ""
    finished = sum(status.states["done"] for status in statuses)
    total = sum(len(status.group.shards) for status in statuses)
    plots = (_svg(_busiest(throughput_series(history)), "Throughput", "records processed / s")
             + _svg(_busiest(acceptance_series(history)), "Acceptance", "accepted share"))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">{refresh}<title>{escape(run_name)}: status</title>
<style>{STYLE}</style></head><body>
<h1>{escape(run_name)}</h1>
<p>run directory <code>{escape(str(run.root))}</code>; {finished} of {total} shards done; updated
{time.strftime("%Y-%m-%d %H:%M:%S %Z")}{f"; reloads every {refresh_s:g} s" if refresh_s else ""};
{len(history)} status snapshots in <code>{escape(run.status_history().name)}</code>.</p>
{status_table(run, statuses, page.parent.resolve())}
<h2>Over time</h2><div class="plots">{plots}</div>
</body></html>
"""


def write_page(page: Path, run: RunDir, run_name: str, statuses: list[GroupStatus], history: list[dict[str, Any]],
               refresh_s: float | None = None) -> None:
    """Write the page atomically (a browser reloading it never sees half a page)."""
    page.parent.mkdir(parents=True, exist_ok=True)
    text = render_page(run, run_name, statuses, history, page, refresh_s)
    with atomic_write(page) as out:
        out.write(text)
