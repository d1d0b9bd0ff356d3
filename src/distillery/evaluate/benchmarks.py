"""Benchmarks as `Query` records: AIME 2024, AIME 2025, MATH-500 and LiveCodeBench, from local JSONL or the hub.

A benchmark entry in a recipe names a built-in benchmark and overrides what it needs (samples, a slice,
another file, a Hugging Face dataset id); everything else comes from the built-in defaults below, which are
the paper's: k = 64 samples for AIME, 4 for MATH-500, 16 for LiveCodeBench. Local files follow the schemas of
the packaged copies (`distillery/data/benchmarks/README.md`). Hugging Face datasets are read through `datasets.load_dataset` with
the same field mapping; only its local-file form (`hf_dataset: json` + `hf_data_files`) is tested offline,
as the hub is unreachable here. For example, MATH-500 from the hub:

    - {name: math500, hf_dataset: HuggingFaceH4/MATH-500, hf_split: test, fields: {id: unique_id}}
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from distillery.schema.records import Query, Reference, TestCase, make_query
from distillery.data import BENCHMARK_FILES

logger = logging.getLogger(__name__)

MATH_PROMPT = "{problem}\n\nPlease reason step by step, and put your final answer within \\boxed{{}}."
CODE_STDIN_PROMPT = (
    "{problem}\n\nWrite a Python 3 program that solves this problem. It reads the input from standard input "
    "and writes the answer to standard output. Give the complete program in one ```python code block."
)
CODE_CALL_PROMPT = (
    "{problem}\n\nSolve this problem in Python 3 by completing the starter code below. Give the complete "
    "solution in one ```python code block.\n\n```python\n{starter_code}\n```"
)


class FieldMap(BaseModel):
    """Which column of a benchmark row holds what."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field("id", description="Unique row id; None numbers the rows.")
    problem: str = Field("problem", description="The question text.")
    answer: str | None = Field("answer", description="Gold final answer (math).")
    tests: str | None = Field(None, description="Code tests: a list of {input, output} (or its JSON string).")
    starter_code: str | None = Field(None, description="Starter code of call-style code problems.")
    fn_name: str | None = Field(None, description="Function called by call-style code tests; empty: stdin/stdout.")


BUILTIN: dict[str, dict[str, Any]] = {
    "aime24": {"title": "AIME 2024", "kind": "math", "file": BENCHMARK_FILES["aime24"], "samples": 64},
    "aime25": {"title": "AIME 2025", "kind": "math", "file": BENCHMARK_FILES["aime25"], "samples": 64},
    "math500": {"title": "MATH-500", "kind": "math", "file": BENCHMARK_FILES["math500"], "samples": 4},
    "livecodebench": {
        "title": "LiveCodeBench", "kind": "code", "file": BENCHMARK_FILES["livecodebench"], "samples": 16,
        "fields": {"problem": "question", "answer": None, "tests": "tests", "starter_code": "starter_code",
                   "fn_name": "fn_name"},
        "where": {"in_2024_08_to_2025_01_window": True},
        "note": "LiveCodeBench v5, problems dated 2024-08 to 2025-01, scored on the public tests only "
                "(the hidden tests are not in the local copy): not comparable to published LCB pass@1.",
    },
}
"""Built-in benchmarks; `file` is relative to the eval stage's `benchmarks_dir` (default: the packaged copy)."""


class BenchmarkSpec(BaseModel):
    """One benchmark of an eval step; unset fields take the built-in defaults of the same name."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                      description="Benchmark name (built-ins: aime24, aime25, math500, livecodebench).")
    title: str = Field("", description="Column title in results tables; defaults to the name.")
    kind: Literal["math", "code"] = Field(
        "math", description="math: final answer checked by the math verifier; code: tests run in the sandbox.")
    file: Path | None = Field(None, description="Local JSONL file, absolute or relative to benchmarks_dir.")
    hf_dataset: str | None = Field(
        None, description="Hugging Face dataset id (or a `datasets` builder such as json); used instead of `file`.")
    hf_config: str | None = Field(None, description="Hugging Face dataset configuration name.")
    hf_split: str = Field("test", description="Hugging Face dataset split.")
    hf_data_files: list[str] | None = Field(None, description="Data files of a builder dataset (hf_dataset: json).")
    fields: FieldMap = Field(default_factory=FieldMap, description="Column names of a row.")
    where: dict[str, Any] = Field(default_factory=dict, description="Keep only rows whose fields equal these.")
    samples: int = Field(1, ge=1, description="Samples per problem (k); pass@1 is their mean.")
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N problems (after `where`).")
    max_tokens: int | None = Field(None, ge=1, description="Overrides the step's max_tokens for this benchmark.")
    prompt: str | None = Field(
        None, description="User prompt template with {problem} (and {starter_code}); defaults by kind.")
    note: str = Field("", description="Footnote shown under results tables.")

    @model_validator(mode="before")
    @classmethod
    def _builtin_defaults(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {"name": data}
        if isinstance(data, dict) and data.get("name") in BUILTIN:
            defaults = dict(BUILTIN[data["name"]])
            if data.get("hf_dataset") or data.get("file"):
                defaults.pop("file", None)
                defaults.pop("where", None)
                defaults.pop("note", None)
            data = {**defaults, **data}
        return data

    @property
    def display(self) -> str:
        return self.title or self.name

    def source(self, benchmarks_dir: Path) -> str:
        """Where the rows come from, for logs, `where` fields and errors."""
        if self.hf_dataset:
            return f"hf:{self.hf_dataset}" + (f"/{self.hf_config}" if self.hf_config else "") + f"[{self.hf_split}]"
        return str(self.local_path(benchmarks_dir))

    def local_path(self, benchmarks_dir: Path) -> Path:
        if self.file is None:
            raise ValueError(f"benchmark {self.name!r}: neither `file` nor `hf_dataset` is set")
        return self.file if self.file.is_absolute() else benchmarks_dir / self.file


@dataclass(frozen=True)
class BenchmarkRow:
    """One problem of a benchmark: its query, or why the row could not be read."""

    benchmark: str
    problem_id: str
    where: str
    query: Query | None
    problem: str = ""
    raw: str = ""


def _raw_rows(spec: BenchmarkSpec, benchmarks_dir: Path) -> Iterator[tuple[str, str, dict[str, Any] | None, str]]:
    """(where, raw text, parsed row or None, parse problem) in file order."""
    if spec.hf_dataset:
        from datasets import load_dataset

        dataset = load_dataset(spec.hf_dataset, spec.hf_config, split=spec.hf_split, data_files=spec.hf_data_files)
        source = spec.source(benchmarks_dir)
        for index, row in enumerate(dataset):
            yield f"{source}#{index}", "", dict(row), ""
        return
    path = spec.local_path(benchmarks_dir)
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                yield f"{path}:{line_number}", line, None, f"not JSON: {error}"
                continue
            if not isinstance(row, dict):
                yield f"{path}:{line_number}", line, None, f"expected a JSON object, got {type(row).__name__}"
                continue
            yield f"{path}:{line_number}", line, row, ""


def _tests(value: Any) -> list[TestCase]:
    if isinstance(value, str):
        value = json.loads(value)
    return [TestCase(input=str(test["input"]), output=str(test["output"])) for test in value]


def _to_query(spec: BenchmarkSpec, row: dict[str, Any], problem_id: str, source: str) -> Query:
    fields = spec.fields
    problem = row.get(fields.problem)
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError(f"field {fields.problem!r} is missing or empty")
    if spec.kind == "math":
        answer = row.get(fields.answer) if fields.answer else None
        if answer is None or str(answer).strip() == "":
            raise ValueError(f"field {fields.answer!r} (gold answer) is missing or empty")
        reference = Reference(answer=str(answer).strip())
        prompt = (spec.prompt or MATH_PROMPT).format(problem=problem)
        category = "math"
    else:
        tests = _tests(row.get(fields.tests) or []) if fields.tests else []
        if not tests:
            raise ValueError(f"field {fields.tests!r} has no code tests")
        starter = (row.get(fields.starter_code) or "") if fields.starter_code else ""
        fn_name = (row.get(fields.fn_name) or None) if fields.fn_name else None
        reference = Reference(tests=tests, fn_name=fn_name, starter_code=starter or None)
        template = spec.prompt or (CODE_CALL_PROMPT if starter else CODE_STDIN_PROMPT)
        prompt = template.format(problem=problem, starter_code=starter)
        category = "code"
    return make_query(category, [{"role": "user", "content": prompt}], reference, source=f"benchmark:{spec.name}",
                      metadata={"benchmark": spec.name, "problem_id": problem_id, "problem": problem, "origin": source})


def load_benchmark(spec: BenchmarkSpec, benchmarks_dir: Path | str) -> list[BenchmarkRow]:
    """The benchmark's problems in file order, after `where` and `limit`; unreadable rows are kept as such."""
    benchmarks_dir = Path(benchmarks_dir)
    rows: list[BenchmarkRow] = []
    for index, (where, raw, row, problem) in enumerate(_raw_rows(spec, benchmarks_dir)):
        if row is not None and any(row.get(key) != value for key, value in spec.where.items()):
            continue
        if spec.limit is not None and len(rows) >= spec.limit:
            break
        if row is None:
            rows.append(BenchmarkRow(spec.name, f"row-{index}", where, None, problem, raw))
            continue
        row_id = row.get(spec.fields.id) if spec.fields.id else None
        problem_id = str(row_id) if row_id is not None else f"row-{index}"
        try:
            query = _to_query(spec, row, problem_id, where)
        except (ValueError, KeyError, TypeError) as error:
            rows.append(BenchmarkRow(spec.name, problem_id, where, None, str(error), raw or json.dumps(row)))
            continue
        rows.append(BenchmarkRow(spec.name, problem_id, where, query))
    logger.debug("benchmark %s: %d problems from %s", spec.name, len(rows), spec.source(benchmarks_dir))
    return rows
