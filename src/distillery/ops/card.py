"""The dataset card (`README.md`, the Hugging Face dataset-card format) an export writes beside its file.

The YAML header holds what the Hub and `datasets.load_dataset(folder)` read: the configs (which file is the train
split), the features (for Parquet, from the file's fixed schema), task categories, size, licence. The body holds
the lineage (`distillery.ops.provenance`) and what the exported records hold, counted while they streamed past
(`ExportStats`: memory bounded by the number of distinct lengths, not the number of records).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from distillery.core.store import atomic_write
from distillery.ops.provenance import Provenance

logger = logging.getLogger("distillery.export")

CARD = "README.md"
MARK = "<!-- dataset card written by `distillery export` -->"
"""A README.md carrying this line was written by an export and may be replaced by the next one."""

LENGTHS = {"response_tokens": "answer tokens (accepted response)", "think_chars": "reasoning characters",
           "answer_chars": "answer characters", "prompt_chars": "prompt characters"}

_DTYPES = {pa.string(): "string", pa.int64(): "int64", pa.float64(): "float64", pa.bool_(): "bool"}


@dataclass
class ExportStats:
    """Counts over the exported records, from their typed columns (`record_columns`)."""

    records: int = 0
    categories: Counter = field(default_factory=Counter)
    sources: Counter = field(default_factory=Counter)
    lineages: Counter = field(default_factory=Counter)
    verifiers: Counter = field(default_factory=Counter)
    lengths: dict[str, Counter] = field(default_factory=lambda: {name: Counter() for name in LENGTHS})
    """Per length measure, how many records had each value (exact quantiles in bounded memory)."""

    def add(self, columns: dict[str, Any]) -> None:
        self.records += 1
        for counter, name in ((self.categories, "category"), (self.sources, "source"), (self.lineages, "lineage"),
                              (self.verifiers, "verifier")):
            if columns.get(name) is not None:
                counter[columns[name]] += 1
        values = {"response_tokens": columns.get("response_tokens"), "prompt_chars": _length(columns.get("prompt")),
                  "think_chars": _length(columns.get("think")), "answer_chars": _length(columns.get("answer"))}
        for name, value in values.items():
            if value is not None:
                self.lengths[name][value] += 1


def _length(text: str | None) -> int | None:
    return len(text) if text is not None else None


def length_summary(histogram: Counter) -> dict[str, float]:
    """count, mean, min, median, p90 and max of a {value: how many} histogram."""
    count = sum(histogram.values())
    ordered = sorted(histogram.items())

    def quantile(share: float) -> int:
        rank, seen = share * (count - 1), 0
        for value, times in ordered:
            seen += times
            if seen > rank:
                return value
        return ordered[-1][0]

    return {"count": count, "mean": sum(v * n for v, n in ordered) / count, "min": ordered[0][0],
            "median": quantile(0.5), "p90": quantile(0.9), "max": ordered[-1][0]}


def features_yaml(schema: pa.Schema) -> list[dict[str, Any]]:
    """A Parquet schema as the card's `dataset_info.features` (strings, numbers, flags, lists of structs)."""

    def feature(name: str, kind: pa.DataType) -> dict[str, Any]:
        if pa.types.is_list(kind) and pa.types.is_struct(kind.value_type):
            return {"name": name, "list": [feature(sub.name, sub.type) for sub in kind.value_type]}
        return {"name": name, "dtype": _DTYPES[kind]}

    return [feature(column.name, column.type) for column in schema]


def card_path(folder: Path) -> Path:
    """Where the card of an export into `folder` goes: README.md, unless a README.md that no export wrote is
    there (a project's own), which is never overwritten: then `dataset-card.md`."""
    path = folder / CARD
    if path.exists():
        with path.open(encoding="utf-8", errors="replace") as handle:
            if MARK not in handle.read(65536):
                logger.warning("%s is not a dataset card of an export: the card goes to dataset-card.md", path)
                return folder / "dataset-card.md"
    return path


def _size_category(count: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")]
    return next((label for bound, label in bounds if count < bound), "n>100M")


def _licence_id(provenance: Provenance) -> str:
    declared = {facts.licence.split(" (")[0].strip().lower() for facts in provenance.inputs if facts.licence}
    if not provenance.inputs or any(facts.licence is None for facts in provenance.inputs):
        return "unknown"
    return declared.pop() if len(declared) == 1 else "other"


def header(provenance: Provenance, stats: ExportStats, data_file: str, schema: pa.Schema | None) -> dict[str, Any]:
    name = f"{provenance.run_name}: {provenance.step}" + (f" of {provenance.lineage}" if provenance.lineage else "")
    return {
        "pretty_name": name, "license": _licence_id(provenance), "language": ["en"],
        "task_categories": ["text-generation", "question-answering"],
        "tags": ["distillery", "reasoning", "distillation", "synthetic", *sorted(stats.categories)],
        "size_categories": [_size_category(stats.records)],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": data_file}]}],
        **({"dataset_info": {"features": features_yaml(schema)}} if schema is not None else {}),
    }


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    return [f"| {' | '.join(head)} |", f"|{'---|' * len(head)}",
            *(f"| {' | '.join(str(cell).replace('|', '/') for cell in row)} |" for row in rows)]


def _flow(value: Any) -> str:
    """A setting on one line, in YAML flow style."""
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6).strip()


def _counts(title: str, column: str, counter: Counter) -> list[str]:
    if not counter:
        return []
    rows = [[value, count] for value, count in counter.most_common()]
    return ["", f"{title}:", "", *_table([column, "records"], rows)]


def body(provenance: Provenance, stats: ExportStats, data_file: str, sample: str) -> list[str]:
    lines = [MARK, f"# {provenance.run_name}: step `{provenance.step}`"
             + (f" of `{provenance.lineage}`" if provenance.lineage else ""), "",
             f"Made by distillery. `{data_file}` holds {stats.records} records{sample}.", "", "## Lineage", "",
             f"- recipe sha256: `{provenance.recipe_sha256}` (the run's `recipe.yaml`, in full at the end)",
             f"- code version: {', '.join(f'`{version}`' for version in provenance.code_versions)}"]
    teacher = provenance.teacher
    if teacher is not None:
        options = f", options {_flow(teacher['options'])}" if teacher["options"] else ""
        lines += ["", "### Teacher", "", f"- name: `{teacher['name']}`", f"- model: `{teacher['model']}`",
                  f"- engine: `{teacher['backend']}`{options}",
                  f"- sampling: {', '.join(f'{k} {v}' for k, v in teacher['sampling'].items() if v is not None)}"]
    if provenance.verify is not None:
        verify = provenance.verify
        lines += ["", "### Verifiers and thresholds", "",
                  f"An answer passes when its verifier's score reaches **{verify['threshold']}** "
                  f"(verification {'on' if verify['verification'] else 'off'}, at most {verify['max_attempts']} "
                  "attempts per query).", "",
                  *_table(["category", "verifier", "accepted records here"],
                          [[category, name, stats.categories.get(category, 0)]
                           for category, name in verify["verifiers"].items()])]
        lines += _counts("Verifiers of the accepted answers", "verifier", stats.verifiers)
    lines += ["", "### Steps and filters", "", *_table(
        ["step", "type", "lineage", "shards", "in", "kept", "dropped", "quarantined", "thresholds and settings "
         "the recipe changed"],
        [[f.step, f.type, f.lineage or "-", f.shards, f.inputs, f.kept, f.rejected, f.quarantined,
          _flow(f.settings) if f.settings else "-"]
         for f in provenance.chain])]
    for facts in provenance.chain:
        if facts.reasons:
            lines += ["", f"Dropped by `{facts.step}` ({facts.rejected}), by reason:", "",
                      *_table(["reason", "records"], [[r, n] for r, n in facts.reasons.most_common(20)])]
    if provenance.variant is not None:
        variant = provenance.variant
        settings = _flow(variant["settings"]) if variant["settings"] else "-"
        lines += ["", "### Variant rule", "", f"- variant: `{variant['name']}`", f"- rule: {variant['rule'] or '-'}",
                  f"- settings: {settings}"]
    lines += ["", "### Decontamination", "",
              f"Decontaminated against: {', '.join(provenance.benchmarks)}." if provenance.benchmarks
              else "No decontamination step is in this data's lineage."]
    lines += ["", "### Input sources and licences", ""]
    lines += _table(["file", "source", "licence it declares"],
                    [[f"`{i.path}`", i.source, i.licence or "none declared"] for i in provenance.inputs]) \
        if provenance.inputs else ["No ingest step is in this data's lineage."]
    lines += ["", "## Contents"]
    lines += _counts("Records per category", "category", stats.categories)
    lines += _counts("Records per source", "source", stats.sources)
    lines += _counts("Records per teacher or lineage", "lineage", stats.lineages)
    rows = [[LENGTHS[name], *(f"{value:.1f}" if key == "mean" else value
                              for key, value in length_summary(histogram).items())]
            for name, histogram in stats.lengths.items() if histogram]
    if rows:
        lines += ["", "Length statistics:", "", *_table(["measure", "count", "mean", "min", "median", "p90", "max"],
                                                         rows)]
    lines += ["", "## Recipe", "", "```yaml", provenance.recipe_text.rstrip("\n"), "```", ""]
    return lines


def write_card(path: Path, provenance: Provenance, stats: ExportStats, data_file: str,
               schema: pa.Schema | None, sample: str = "") -> Path:
    """Write the card for `data_file` (relative to the card's folder) atomically; returns its path."""
    front = yaml.safe_dump(header(provenance, stats, data_file, schema), sort_keys=False, allow_unicode=True)
    text = f"---\n{front}---\n" + "\n".join(body(provenance, stats, data_file, sample))
    with atomic_write(path) as out:
        out.write(text)
    return path
