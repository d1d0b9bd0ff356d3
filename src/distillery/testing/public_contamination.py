"""The public labelled contamination set (tests/data/decontamination/, built by
benchmarks/build_decontamination_set.py from GSM8K, MGSM and llm-decontaminator's rephrasings; README there).

index.jsonl holds the benchmark originals (GSM8K test problems); labelled.jsonl holds queries, each with its
`kind` (contaminated: paraphrase, translation, light_edit; clean: fresh), `lang`, the index item it copies (none
for fresh rows) and its `split` (calibration or held_out: thresholds are chosen on the first, reported on both).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from distillery.prepare.benchsets import BenchmarkSource

CONTAMINATED = ("paraphrase", "translation", "light_edit")
CLEAN = ("fresh",)
SPLITS = ("calibration", "held_out")
BENCHMARK = "gsm8k"


@dataclass(frozen=True)
class Row:
    id: str
    split: str
    kind: str
    lang: str
    item_id: str | None
    source: str
    text: str

    @property
    def contaminated(self) -> bool:
        return self.kind in CONTAMINATED


def index_source(folder: Path) -> BenchmarkSource:
    """The set's benchmark (GSM8K test originals) as a decontaminate benchmark entry."""
    return BenchmarkSource(name=BENCHMARK, file=folder / "index.jsonl", text_field="question", id_field="id")


def load(folder: Path) -> list[Row]:
    """The labelled rows; a row whose kind, split or item does not fit the rest is an error naming its line."""
    items = {json.loads(line)["id"] for line in (folder / "index.jsonl").read_text(encoding="utf-8").splitlines()}
    rows = []
    with (folder / "labelled.jsonl").open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            row = Row(**json.loads(line))
            if row.kind not in CONTAMINATED + CLEAN or row.split not in SPLITS:
                raise ValueError(f"{folder}/labelled.jsonl:{number}: kind {row.kind!r}, split {row.split!r}")
            if row.contaminated != (row.item_id in items):
                raise ValueError(f"{folder}/labelled.jsonl:{number}: {row.kind} row with index item {row.item_id!r}")
            rows.append(row)
    return rows
