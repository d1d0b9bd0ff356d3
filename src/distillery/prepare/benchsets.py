"""The evaluation benchmarks a corpus is decontaminated against, read as (benchmark, item id, text) triples.

Built-in names map to the benchmark files packaged with distillery (`distillery/data/benchmarks/README.md` gives
their schemas and provenance); any entry can instead name a file or a Hugging Face dataset id, read with
`datasets.load_dataset` and the same field names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from distillery.data import BENCHMARK_FILES, benchmarks_dir

TEXT_FIELDS = {"livecodebench": "question", "ifeval": "prompt"}
BUILTIN: dict[str, dict[str, str]] = {
    name: {"file": file, "text_field": TEXT_FIELDS.get(name, "problem")} for name, file in BENCHMARK_FILES.items()}
"""Built-in benchmarks: `file` is relative to the stage's benchmarks_dir (default: the packaged copy)."""


class BenchmarkSource(BaseModel):
    """One benchmark; a built-in name needs nothing else, any other needs `file` or `hf_dataset`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Benchmark name (built-in: aime24, aime25, math500, livecodebench, ifeval).")
    file: Path | None = Field(None, description="Local JSONL file, absolute or relative to benchmarks_dir.")
    hf_dataset: str | None = Field(None, description="Hugging Face dataset id (e.g. HuggingFaceH4/MATH-500), used instead of `file`.")
    hf_config: str | None = Field(None, description="Hugging Face dataset configuration name.")
    hf_split: str = Field("test", description="Hugging Face dataset split.")
    hf_data_files: list[str] | None = Field(None, description="Data files for a builder dataset (hf_dataset: json, parquet).")
    text_field: str | None = Field(None, description="Column holding the problem text (built-in default for built-in names).")
    id_field: str | None = Field("id", description="Column holding a unique item id; None numbers the rows.")

    @model_validator(mode="after")
    def _complete(self) -> BenchmarkSource:
        builtin = BUILTIN.get(self.name)
        if builtin is None and self.file is None and self.hf_dataset is None:
            raise ValueError(f"benchmark {self.name!r} is not built in ({sorted(BUILTIN)}): give `file` or `hf_dataset`")
        if self.text_field is None:
            if builtin is None:
                raise ValueError(f"benchmark {self.name!r}: give `text_field`")
            self.text_field = builtin["text_field"]
        return self


@dataclass(frozen=True)
class BenchItem:
    benchmark: str
    item_id: str
    text: str


def _rows(source: BenchmarkSource, folder: Path | None) -> list[dict[str, Any]]:
    if source.hf_dataset is not None:
        from datasets import load_dataset

        return list(load_dataset(source.hf_dataset, source.hf_config, split=source.hf_split, data_files=source.hf_data_files))
    path = source.file or Path(BUILTIN[source.name]["file"])
    if not path.is_absolute():
        path = benchmarks_dir(folder) / path
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_benchmarks(sources: list[BenchmarkSource], folder: Path | None) -> list[BenchItem]:
    items: list[BenchItem] = []
    for source in sources:
        for index, row in enumerate(_rows(source, folder)):
            text = row.get(source.text_field or "")
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"benchmark {source.name} row {index}: no text in field {source.text_field!r}")
            item_id = str(row[source.id_field]) if source.id_field else str(index)
            items.append(BenchItem(source.name, item_id, text))
    return items
