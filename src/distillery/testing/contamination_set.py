"""The labelled contamination set (data/contamination_set.jsonl): queries derived from real benchmark items.

Each row names the packaged benchmark item it derives from (none for fresh problems) and its kind:
- contaminated: `paraphrase` (rewritten by hand in other words, numbers kept, sometimes as words), `translation`
  (written by hand in French, German, Spanish or Chinese, LaTeX and samples kept), `edits` (about 6% of the words
  substituted, deleted, inserted or swapped), `formatting` (dollar signs and spacing, or case and zero-width
  spaces, changed), `wrapped` (the verbatim problem inside a prompt template);
- not contaminated: `template_numbers` (the item's own wording with other numbers: expected in the audit as
  template reuse and kept by default) and `fresh_boilerplate` (new problems written in the house style of AIME,
  MATH, AtCoder, LeetCode, Codeforces or IFEval, sharing its stock sentences with many benchmark items).
Edits and formatting rows were derived once with labelled.word_edits / labelled.formatting_change /
planted.formatting (seed 13) and stored, so the file is the whole set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CONTAMINATED = ("paraphrase", "translation", "edits", "formatting", "wrapped")
CLEAN = ("template_numbers", "fresh_boilerplate")


@dataclass(frozen=True)
class Row:
    kind: str
    lang: str
    benchmark: str | None
    item_id: str | None
    text: str

    @property
    def contaminated(self) -> bool:
        return self.kind in CONTAMINATED


def load(path: Path) -> list[Row]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            row = Row(**json.loads(line))
            if row.kind not in CONTAMINATED + CLEAN or (row.item_id is None) != (row.kind == "fresh_boilerplate"):
                raise ValueError(f"{path}:{number}: kind {row.kind!r} with item {row.item_id!r}")
            rows.append(row)
    return rows
