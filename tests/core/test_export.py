"""`distillery export` on run folders faked as the runner leaves them (`finish_shard`), with traces of MATH-500
problems: Parquet that `datasets` loads and that gives back the JSONL rows, a variant lineage's AM export, a
seeded sample over every shard (`--limit`), and errors that name what exists."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import datasets
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.stats import chi2

from distillery.cli import main
from distillery.ops.exporting import ExportError, export_step, sample_positions
from distillery.schema.formats import DISTILLERY_FIELDS, query_from_am
from distillery.ops.parquet import row_from_parquet, write_parquet
from distillery.core.plan import pending_groups
from distillery.core.recipe import Recipe, parse_recipe
from distillery.schema.records import Attempt, Reference, Trace, make_query
from distillery.core.runner import load_run_recipe
from distillery.core.store import RunDir
from distillery.data import benchmarks_dir
from distillery.executors import build_executor
from distillery.executors.handles import all_done
from distillery.testing import finish_shard, make_trace
from distillery.testing.stages import trace_recipe

LINEAGE = "t1+strict"
SHARD_SIZES = (4, 7, 5)


def _math500(count: int) -> list[dict[str, Any]]:
    lines = (benchmarks_dir() / "math500" / "math500.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[:count]]


def _trace(problem: dict[str, Any], teacher: str) -> Trace:
    """A trace whose first attempt failed and whose second boxed the MATH-500 answer."""
    query = make_query("math", [{"role": "user", "content": problem["problem"]}],
                       Reference(answer=problem["answer"]), source="math500", metadata={"level": problem["level"]})
    attempts = [Attempt(index=0, seed=1, response="<think>guess</think>\n\nThe answer is $\\boxed{0}$.", score=0.0,
                        passed=False, verifier="math_verify", completion_tokens=9),
                Attempt(index=1, seed=2, response=f"<think>{problem['solution']}</think>\n\n"
                        f"The answer is $\\boxed{{{problem['answer']}}}$.", score=1.0, passed=True,
                        verifier="math_verify", completion_tokens=len(problem["solution"].split()))]
    return Trace(query=query, teacher=teacher, attempts=attempts, accepted=1,
                 response_tokens=attempts[1].completion_tokens, ppl=3.5)


def _released_trace(problem: dict[str, Any]) -> Trace:
    """A trace of an imported AM row whose question `info` came as JSON text and answer `info` as an object (the
    released files drift so): its AM export gives both back as they were."""
    answer_info = {"source": "math500", "category": "math", "ground_truth": None, "verify_score": 1.0,
                   "model_name": "AM-Thinking-v1", "ppl": 2.25, "think_content": "t", "answer_content": "a"}
    row = {"system": "", "conversations": [
        {"from": "human", "value": problem["problem"],
         "info": json.dumps({"source": "math500", "category": "math", "ground_truth": problem["answer"]})},
        {"from": "assistant", "value": f"<think>t</think>\n\n$\\boxed{{{problem['answer']}}}$", "info": answer_info}]}
    query, released = query_from_am(row)
    assert released is not None
    return Trace(query=query, teacher="t1", attempts=[Attempt(index=0, seed=0, response=released.response, score=1.0,
                                                              passed=True, verifier="released")], accepted=0)


def _run(tmp_path: Path, lineage: str = "t1", sizes: tuple[int, ...] = SHARD_SIZES,
         unfinished: tuple[int, ...] = ()) -> tuple[RunDir, Recipe, list[dict[str, Any]]]:
    """A run of `len(sizes)` trace shards of `lineage`; shard i holds sizes[i] traces. Returns every record
    in shard order."""
    data = trace_recipe(tmp_path / "run", {}, num_shards=len(sizes))
    recipe = parse_recipe(data)
    run = RunDir(recipe.run_dir)
    run.root.mkdir(parents=True)
    run.recipe.write_text(json.dumps(data))
    problems = iter(_math500(sum(sizes)))
    records: list[dict[str, Any]] = []
    for shard_index, size in enumerate(sizes):
        shard = [_trace(next(problems), "t1").model_dump(mode="json") for _ in range(size)]
        records += shard
        if shard_index not in unfinished:
            finish_shard(run, "traces", lineage, shard_index, shard, num_shards=len(sizes))
    return run, recipe, records


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _loaded(path: Path, cache: Path) -> list[dict[str, Any]]:
    return list(datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(cache)))


@pytest.mark.parametrize("fmt", ["am", "messages", "native"])
def test_parquet_loads_with_datasets_and_gives_back_the_jsonl_rows(tmp_path: Path, fmt: str) -> None:
    run, recipe, records = _run(tmp_path)
    released = _released_trace(_math500(1)[0]).model_dump(mode="json")
    finish_shard(run, "traces", "t1", 1, [*records[4:11], released], num_shards=3)
    as_jsonl = export_step(run, recipe, "traces", "t1", fmt, tmp_path / "out.jsonl")
    as_parquet = export_step(run, recipe, "traces", "t1", fmt, tmp_path / "out.parquet", container="parquet")
    assert as_jsonl.written == as_parquet.written == as_parquet.total == len(records) + 1
    loaded = _loaded(tmp_path / "out.parquet", tmp_path / "cache")
    expected = _jsonl(tmp_path / "out.jsonl")
    if fmt == "native":
        assert [row["key"] for row in loaded] == [row["query"]["id"] for row in expected]
        expected = [{"key": row["query"]["id"], "record": row} for row in expected]
    assert [row_from_parquet(row, fmt) for row in loaded] == expected
    if fmt == "am":
        answers = [row["conversations"][-1] for row in loaded]
        assert answers[0]["value"] == Trace.model_validate(records[0]).response
        assert json.loads(loaded[0]["conversations"][0]["info"])["ground_truth"] == records[0]["query"]["reference"][
            "answer"]
        drifted = loaded[11]["conversations"]
        assert isinstance(json.loads(drifted[0]["info"]), str) and json.loads(drifted[1]["info"])["ppl"] == 2.25


def test_parquet_schema_does_not_depend_on_the_rows_and_row_groups_stream(tmp_path: Path) -> None:
    rows = [{"system": "", "conversations": [{"from": "human", "value": "q", "info": {"a": 1}}]},
            {"system": None, "conversations": [{"from": "human", "value": "q", "info": "text", "odd": [1]}],
             "uuid": 7}]
    assert write_parquet(tmp_path / "a.parquet", rows * 5, "am", batch_rows=3) == 10
    assert write_parquet(tmp_path / "b.parquet", [], "am") == 0
    first, empty = pq.ParquetFile(tmp_path / "a.parquet"), pq.ParquetFile(tmp_path / "b.parquet")
    assert first.schema_arrow == empty.schema_arrow and first.metadata.num_row_groups == 4
    back = [row_from_parquet(row, "am") for row in first.read().to_pylist()]
    assert back == rows * 5, "a null system, an info as text and keys outside the schema come back as written"


def test_am_export_of_a_variant_lineage_keeps_its_name_and_score(tmp_path: Path) -> None:
    """A real `variants` step (threshold 1.0 over the generated attempts) makes the lineage; export reads it."""
    data = {"name": "variant-export", "run_dir": str(tmp_path / "run"), "num_shards": 2,
            "teachers": [{"name": "t1", "model": "replay.jsonl", "backend": "replay"}],
            "steps": {"generate": {}, "variants": {"rules": {"strict": {"threshold": 1.0}}}}}
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.recipe.write_text(json.dumps(data))
    recipe = load_run_recipe(run)
    problems = iter(_math500(9))
    records = []
    for shard_index, size in enumerate((4, 5)):
        shard = [_trace(next(problems), "t1").model_dump(mode="json") for _ in range(size)]
        records += shard
        finish_shard(run, "generate", "t1", shard_index, shard, recipe=recipe)
    assert all_done(build_executor(recipe, run, "local").execute(pending_groups(run, recipe)))
    assert main(["export", str(run.root), "--step", "variants", "--teacher", LINEAGE, "--format", "am",
                 "--as", "parquet", "-o", str(tmp_path / "v.parquet")]) == 0
    loaded = _loaded(tmp_path / "v.parquet", tmp_path / "cache")
    assert len(loaded) == len(records)
    ours = [json.loads(row["conversations"][-1][DISTILLERY_FIELDS]) for row in loaded]
    assert all(o["variant"] == {"name": "strict", "attempt": 1, "score": 1.0} and o["model_name"] == "t1"
               for o in ours)
    result = export_step(run, recipe, "variants", LINEAGE, "am", tmp_path / "v.jsonl")
    assert (result.written, result.total) == (len(records), len(records))
    assert [row["conversations"][-1][DISTILLERY_FIELDS]["variant"]["name"] for row in _jsonl(tmp_path / "v.jsonl")] == \
        ["strict"] * len(records)


def _sample_ids(run: RunDir, recipe: Recipe, tmp_path: Path, limit: int, seed: int) -> list[str]:
    out = tmp_path / f"sample-{limit}-{seed}.jsonl"
    result = export_step(run, recipe, "traces", "t1", "native", out, limit=limit, seed=seed)
    assert result.total == sum(SHARD_SIZES)
    return [row["query"]["id"] for row in _jsonl(out)]


def test_limit_samples_across_shards_in_a_seeded_deterministic_order(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    run, recipe, records = _run(tmp_path)
    order = [row["query"]["id"] for row in records]
    shard_of = {key: index for index, key in enumerate(order)}
    sample = _sample_ids(run, recipe, tmp_path, 6, seed=3)
    assert len(set(sample)) == 6 and set(sample) <= set(order)
    assert sample == sorted(sample, key=shard_of.__getitem__), "kept in shard, then line order"
    offsets = (0, 4, 11)
    assert sample == [order[offsets[shard] + line] for shard, lines in enumerate(sample_positions(SHARD_SIZES, 6, 3))
                      for line in lines], "the lines the drawn positions name"
    shards = {0 if shard_of[key] < 4 else 1 if shard_of[key] < 11 else 2 for key in sample}
    assert len(shards) > 1, "not all from shard 0"
    assert _sample_ids(run, recipe, tmp_path, 6, seed=3) == sample
    assert any(_sample_ids(run, recipe, tmp_path, 6, seed=seed) != sample for seed in (4, 5))
    assert _sample_ids(run, recipe, tmp_path, 16, seed=3) == order == _sample_ids(run, recipe, tmp_path, 99, seed=1)
    assert main(["export", str(run.root), "--step", "traces", "--teacher", "t1", "--limit", "5", "--seed", "9",
                 "-o", str(tmp_path / "cli.jsonl")]) == 0
    assert "wrote 5 records (a sample of 16, seed 9)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["export", str(run.root), "--step", "traces", "--teacher", "t1", "--limit", "0", "-o", str(tmp_path / "0")])
    assert "expected a positive number of records, got 0" in capsys.readouterr().err


def test_the_sample_is_uniform_over_every_record_of_every_shard() -> None:
    """Each of 10 records over shards of 2, 5 and 3 is drawn with probability 3/10: a chi-square test over 3000
    fixed seeds (a biased sampler, e.g. one favouring shard 0 or early lines, fails it)."""
    sizes, limit, seeds = (2, 5, 3), 3, 3000
    hits: Counter[int] = Counter()
    offsets = [0, 2, 7]
    for seed in range(seeds):
        per_shard = sample_positions(sizes, limit, seed)
        assert sum(map(len, per_shard)) == limit
        assert all(lines == sorted(set(lines)) and all(0 <= n < size for n in lines)
                   for lines, size in zip(per_shard, sizes, strict=True))
        hits.update(offsets[shard] + line for shard, lines in enumerate(per_shard) for line in lines)
    expected = seeds * limit / sum(sizes)
    statistic = sum((hits[position] - expected) ** 2 / expected for position in range(sum(sizes)))
    assert statistic < chi2.ppf(0.999, sum(sizes) - 1), hits
    assert math.isclose(sum(hits.values()), seeds * limit)


def test_errors_name_what_exists_and_what_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, recipe, _ = _run(tmp_path, sizes=(3, 2, 2, 4), unfinished=(1, 2))
    with pytest.raises(ExportError, match=r"has no step 'generate'; its steps: traces"):
        export_step(run, recipe, "generate", "t1", "am", tmp_path / "x.jsonl")
    with pytest.raises(ExportError, match=r"no teacher or variant 'smol' \(one of t1\)"):
        export_step(run, recipe, "traces", "smol", "am", tmp_path / "x.jsonl")
    with pytest.raises(ExportError, match=r"pass --teacher \(one of t1\)"):
        export_step(run, recipe, "traces", None, "am", tmp_path / "x.jsonl")
    with pytest.raises(ExportError, match=r"'traces' of 't1' has not finished: 2 of 4 shards .* \(shards 1-2\)"):
        export_step(run, recipe, "traces", "t1", "am", tmp_path / "x.jsonl", limit=2)
    assert not (tmp_path / "x.jsonl").exists()
    assert main(["export", str(run.root), "--step", "traces", "--teacher", "smol", "-o", str(tmp_path / "x")]) == 2
    assert "one of t1" in capsys.readouterr().err


def test_a_shard_changed_since_its_manifest_is_named_before_anything_is_written(tmp_path: Path) -> None:
    run, recipe, _ = _run(tmp_path)
    shard = run.shard("traces", "t1", 2).output
    shard.write_text(shard.read_text(encoding="utf-8").split("\n", 1)[1], encoding="utf-8")
    with pytest.raises(ExportError, match=r"no longer match their manifests: shard-00002\.jsonl \("):
        export_step(run, recipe, "traces", "t1", "am", tmp_path / "x.parquet", container="parquet", limit=3)
    assert not (tmp_path / "x.parquet").exists()


def test_a_record_that_is_no_trace_or_query_is_named_by_file_and_line(tmp_path: Path) -> None:
    run, recipe, records = _run(tmp_path, sizes=(2, 3))
    finish_shard(run, "traces", "t1", 1, [*records[2:4], {"id": "q9", "category": "math"}], num_shards=2)
    with pytest.raises(ExportError, match=r"no am form:\n.*shard-00001\.jsonl:3: messages: Field required"):
        export_step(run, recipe, "traces", "t1", "am", tmp_path / "x.jsonl")
    with pytest.raises(ExportError, match=r"no messages form:\n.*shard-00001\.jsonl:3: messages: Field required"):
        export_step(run, recipe, "traces", "t1", "messages", tmp_path / "x.jsonl", limit=4, seed=0)
    assert not (tmp_path / "x.jsonl").exists()


def test_native_parquet_has_typed_columns_that_pandas_aggregates_without_json(tmp_path: Path) -> None:
    """Mean answer tokens by category and teacher straight from the columns; `record` still gives back the row."""
    run, recipe, records = _run(tmp_path, sizes=(4, 3))
    code = [make_trace(f"Write f{index}.", f"<think>plan {index}</think>\n\n" + "def f(): pass " * index,
                       teacher="t2", category="code").model_dump(mode="json") for index in range(1, 4)]
    code[0]["metadata"] = {"variant": {"name": "strict", "attempt": 0, "score": 1.0}, "layout": "tagged",
                           "student_tokens": 11}
    finish_shard(run, "traces", "t1", 1, [*records[4:], *code], num_shards=2)
    result = export_step(run, recipe, "traces", "t1", "native", tmp_path / "n.parquet", container="parquet")
    assert result.written == len(records) + len(code)
    schema = pq.read_schema(tmp_path / "n.parquet")
    assert schema.field("response_tokens").type == pa.int64() and schema.field("verify_score").type == pa.float64()
    assert schema.field("attempts").type.value_type.field("passed").type == pa.bool_()
    frame = pd.read_parquet(tmp_path / "n.parquet", columns=["category", "teacher", "response_tokens", "lineage",
                                                              "verify_score", "num_attempts", "perplexity"])
    means = frame.groupby(["category", "teacher"])["response_tokens"].mean().to_dict()
    traces = [Trace.model_validate(record) for record in [*records, *code]]
    expected: dict[tuple[str, str], list[int]] = {}
    for trace in traces:
        expected.setdefault((trace.query.category, trace.teacher), []).append(trace.response_tokens)
    assert means == pytest.approx({key: sum(v) / len(v) for key, v in expected.items()})
    assert set(means) == {("math", "t1"), ("code", "t2")}
    assert frame["lineage"].tolist().count("t2+strict") == 1
    assert (frame[frame.category == "math"].num_attempts == 2).all() and (frame.perplexity[:7] == 3.5).all()
    table = pq.read_table(tmp_path / "n.parquet", columns=["think", "answer", "prompt", "record", "key", "extra"])
    rows = table.to_pylist()
    assert [row["think"] for row in rows] == [trace.think for trace in traces]
    assert [row["answer"] for row in rows] == [trace.answer for trace in traces]
    assert [row["prompt"] for row in rows] == [trace.query.prompt for trace in traces]
    assert [row_from_parquet(row, "native")["record"] for row in rows] == [*records, *code]
