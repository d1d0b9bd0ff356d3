"""The cost model against cases worked out by hand (the arithmetic is in the comments), its YAML inputs, its
calibration from a run's manifests or a rehearsal's table, and `distillery plan --cost` on the paper recipe."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from distillery.cli import main
from distillery.core.pricing import CostInputs, LengthBin, StepCost, TeacherCost, attempts_per_query
from distillery.ops.cost import (
    calibrate,
    calibrate_cpu_rates,
    estimate,
    load_cost_inputs,
    load_rehearsal,
    measure_run,
)
from distillery.core.recipe import Recipe, RecipeError, parse_recipe, snapshot
from distillery.core.store import Manifest

REPO = Path(__file__).resolve().parents[2]


def _recipe(run_dir: Path, **extra_steps: dict) -> Recipe:
    return parse_recipe({
        "name": "cost", "run_dir": str(run_dir), "num_shards": 10,
        "executor": {"kind": "slurm", "array_parallelism": 3},
        "teachers": [
            {"name": "t1", "model": "/models/t1", "sampling": {"max_tokens": 1000}},
            {"name": "remote", "model": "r", "backend": "openai", "sampling": {"max_tokens": 1000},
             "options": {"base_url": "http://x/v1"}, "resources": {"cpus_per_task": 2, "job_kind": "cpu"}},
        ],
        "steps": {
            "ingest": {"inputs": [{"path": "/data/q.jsonl"}]},
            "generate": {"max_attempts": 2, "resources": {"gpus_per_node": 2, "cpus_per_task": 4, "time_min": 60}},
            **extra_steps,
        },
    }, check_paths=False)


def _inputs(**changes: object) -> CostInputs:
    base = CostInputs(
        queries=1000, prompt_tokens=100,
        lengths=[LengthBin(tokens=500, share=0.5), LengthBin(tokens=2000, share=0.5)],
        teachers={"t1": TeacherCost(tokens_per_s_per_gpu=250, acceptance=0.5, startup_s=0),
                  "remote": TeacherCost(tokens_per_s_per_gpu=250, acceptance=0.5, serving_gpus=4, startup_s=0)},
        steps={"ingest": StepCost(rate=100, startup_s=0), "pack": StepCost(unit="tokens", rate=1000, startup_s=0),
               "sft": StepCost(unit="tokens", rate=100, startup_s=0)},
        verify_per_s_per_cpu=1.0, task_overhead_s=0, bytes_per_token=4, record_overhead=1.25, pack_fill=0.5, pack_bytes_per_token=9,
        student_params_b=1,
    )
    return base.model_copy(update=changes)


def test_attempts_follow_the_geometric_retry_loop() -> None:
    assert attempts_per_query(0.5, 2) == pytest.approx(1.5)  # 1 + 0.5
    assert attempts_per_query(0.75, 4) == pytest.approx(1 + 0.25 + 0.0625 + 0.015625)  # the paper's ~1.3
    assert attempts_per_query(1.0, 4) == 1.0


def test_generation_gpu_hours_shards_wall_and_disk_by_hand(tmp_path: Path) -> None:
    rows = {row.key: row for row in estimate(_recipe(tmp_path / "run"), _inputs(), nodes=1)}
    ingest, local, remote = rows["ingest"], rows["generate/t1"], rows["generate/remote"]
    # ingest: 1000 records at 100/s on one CPU = 10 task-seconds over 10 shards.
    assert ingest.kind == "cpu" and ingest.shard_s == pytest.approx(1.0)
    assert ingest.cpu_hours == pytest.approx(10 / 3600)
    # generate: attempts (1 - 0.5^2) / 0.5 = 1.5; tokens per attempt mean(min(500, 1000), min(2000, 1000)) = 750;
    # work 1000 x 1.5 x 750 = 1.125M tokens at 250 tokens/s/GPU = 4500 GPU-s = 1.25 GPU-h.
    assert local.gpu_hours == pytest.approx(1.25)
    assert local.records_out == pytest.approx(750)  # 1 - 0.5^2 of the queries pass
    # a shard: 4500 GPU-s / 2 GPUs / 10 shards = 225 s; verification 150 attempts / (1/s x 4 cores) = 37.5 s.
    assert local.shard_s == pytest.approx(225)
    # 8-GPU nodes hold 4 two-GPU tasks, the array runs at most 3: ceil(10 / 3) = 4 waves of 225 s.
    assert local.concurrency == 3 and local.wall_s == pytest.approx(900)
    # disk: 750 traces x (100 + 750) tokens x 4 bytes x 1.25, plus 250 rejected queries x 100 tokens x 5 bytes.
    assert local.disk_bytes == pytest.approx(750 * 850 * 5 + 250 * 100 * 5)
    # the remote teacher: the same 1.25 GPU-h, spent on its 4-GPU server; 3 clients share it, so a shard takes
    # 4500 / 4 / 10 x 3 = 337.5 s and the 4 waves 1350 s.
    assert remote.kind == "remote" and remote.gpu_hours == pytest.approx(1.25)
    assert remote.shard_s == pytest.approx(337.5) and remote.wall_s == pytest.approx(1350)


def test_slow_verification_bounds_the_shard(tmp_path: Path) -> None:
    rows = estimate(_recipe(tmp_path / "run"), _inputs(verify_per_s_per_cpu=0.1), 1)
    row = next(r for r in rows if r.key == "generate/t1")
    # 150 attempts per shard / (0.1/s x 4 cores) = 375 s > 225 s of decoding.
    assert row.shard_s == pytest.approx(375) and "verification is the bottleneck" in row.notes


def test_startup_and_task_overhead_count_in_gpu_hours_and_in_every_shard(tmp_path: Path) -> None:
    inputs = _inputs(task_overhead_s=5)
    inputs.teachers["t1"] = inputs.teachers["t1"].model_copy(update={"startup_s": 60})
    rows = {row.key: row for row in estimate(_recipe(tmp_path / "run"), inputs, 1)}
    # 10 shards x (60 + 5) s x 2 GPUs held while the engine loads: 1300 GPU-s more; each shard 65 s longer.
    assert rows["generate/t1"].gpu_hours == pytest.approx((4500 + 1300) / 3600)
    assert rows["generate/t1"].shard_s == pytest.approx(290)
    assert rows["ingest"].shard_s == pytest.approx(1 + 5)


def test_pack_bins_and_sft_checkpoints_by_hand(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path / "run", pack={"max_tokens": 1000},
                     sft={"epochs": 2, "keep_checkpoints": 2, "resources": {"nodes": 2, "gpus_per_node": 8}})
    rows = {row.key: row for row in estimate(recipe, _inputs(), nodes=1)}
    pack, sft = rows["pack/t1"], rows["sft/t1"]
    # 750 traces x 850 tokens = 637,500 tokens into bins of 1000 x 0.5 filled: 1275 bins; 9 bytes a token.
    assert pack.records_out == 1275 and pack.disk_bytes == pytest.approx(637_500 * 9)
    assert pack.cpu_hours == pytest.approx(637.5 / 3600)  # 637,500 tokens at 1000/s on one core
    # sft: 1275 bins x 500 tokens x 2 epochs = 1.275M tokens at 100 tokens/s/GPU = 12,750 GPU-s.
    assert sft.gpu_hours == pytest.approx(12_750 / 3600)
    # two checkpoints of 1e9 params x 12 bytes (fp32 weights, two moments), plus the exported bf16 student.
    assert sft.disk_bytes == pytest.approx(2 * 12e9 + 2e9)
    # a two-node job does not fit on one node; on two it runs once: 12,750 / 16 GPUs.
    assert math.isinf(sft.wall_s) and "needs 2 nodes" in sft.notes
    two = next(r for r in estimate(recipe, _inputs(), nodes=2) if r.key == "sft/t1")
    assert two.wall_s == pytest.approx(12_750 / 16)


def test_cost_inputs_file_overrides_and_merges_by_name(tmp_path: Path) -> None:
    path = tmp_path / "cost.yaml"
    path.write_text(yaml.safe_dump({"queries": 5000, "teachers": {"am-thinking-v1": {"acceptance": 0.5}},
                                    "steps": {"clean": {"rate": 10}}}))
    inputs = load_cost_inputs(path)
    assert inputs.queries == 5000 and inputs.teachers["am-thinking-v1"].acceptance == 0.5
    assert "deepseek-r1" in inputs.teachers and "ingest" in inputs.steps and inputs.steps["clean"].rate == 10
    path.write_text("teachers: {am-thinking-v1: {acceptence: 0.5}}\n")
    with pytest.raises(RecipeError, match="acceptence"):
        load_cost_inputs(path)


def test_a_step_without_a_throughput_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="no throughput for step 'ingest'"):
        estimate(_recipe(tmp_path / "run"), _inputs(steps={}), 1)


def _manifest(run: Path, step: str, teacher: str | None, index: int, inputs: int, kept: int, elapsed: float,
              **stats: int) -> None:
    folder = run / step / teacher if teacher else run / step
    Manifest(stage=step, teacher=teacher, shard_index=index, num_shards=10, inputs=inputs, kept=kept,
             rejected=inputs - kept, quarantined=0, sha256="0", input_ids_digest="0", output_ids_digest="0",
             config_digest="0", code_version="test", elapsed_s=elapsed,
             stats=stats).save(folder / f"shard-{index:05d}.done.json")


def test_calibration_puts_measurements_next_to_the_estimate_and_reuses_them(tmp_path: Path) -> None:
    run = tmp_path / "run"
    recipe = _recipe(run)
    _manifest(run, "ingest", None, 0, 1000, 990, 5.0)
    for index in range(2):
        _manifest(run, "generate", "t1", index, 100, 75, 100.0, attempts=150, accepted=75, completion_tokens=120_000)
    (run / "generate" / "t1" / "rejected").mkdir()
    measured = measure_run(run)
    assert measured[("generate", "t1")].attempts == 300 and measured[("ingest", None)].kept == 990
    calibrated, rows = calibrate(_inputs(), recipe, measured)
    table = {(row.step, row.quantity): (row.configured, row.measured) for row in rows}
    assert table[("ingest", "keep")] == (1.0, pytest.approx(0.99))
    assert table[("ingest", "records/s per task")] == (100, pytest.approx(200))  # 1000 records in 5 s
    assert table[("ingest", "s per shard")] == (pytest.approx(10), pytest.approx(5))
    assert table[("generate", "acceptance per attempt")] == (0.5, pytest.approx(0.5))  # 150 of 300
    assert table[("generate", "queries kept")] == (pytest.approx(0.75), pytest.approx(0.75))  # 1 - 0.5^2; 150 of 200
    assert table[("generate", "tokens per attempt")] == (pytest.approx(750), pytest.approx(800))
    assert table[("generate", "tokens/s per GPU")] == (250, pytest.approx(600))  # 240k tokens / 200 s / 2 GPUs
    assert table[("generate", "s per shard")] == (pytest.approx(240), pytest.approx(100))  # 120k / (250 x 2)
    # The histogram is stretched until its capped mean is the measured 800: mean(min(500 s, 1000), min(2000 s,
    # 1000)) = 800 at s = 1.2. The estimate redone: 990 queries x 1.5 attempts x 800 tokens at 600 tokens/s/GPU.
    assert calibrated.teachers["t1"].length_scale == pytest.approx(1.2)
    row = next(r for r in estimate(recipe, calibrated, 1) if r.key == "generate/t1")
    assert row.records_in == pytest.approx(990)
    assert row.gpu_hours == pytest.approx(990 * 1.5 * 800 / 600 / 3600)


def test_plan_cost_on_the_paper_recipe_prints_a_row_per_step_and_teacher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in {"DISTILLERY_RUNS": str(tmp_path / "runs"), "DISTILLERY_DATA": str(tmp_path / "data"),
                        "R1_API_KEY": "x"}.items():
        monkeypatch.setenv(name, value)
    recipe = str(REPO / "jobs/am-thinking-distill.yaml")
    assert main(["plan", recipe, "--no-path-check", "--cost", "--nodes", "32"]) == 0
    out = capsys.readouterr().out
    assert "cost estimate at 32 nodes" in out and "remote servers add" in out
    for key in ("ingest", "decontaminate", "generate/am-thinking-v1", "generate/qwen3-235b-a22b",
                "generate/deepseek-r1", "perplexity/deepseek-r1", "sft/am-thinking-v1", "eval/deepseek-r1"):
        assert any(line.startswith(key + " ") for line in out.splitlines()), key
    generate = next(line for line in out.splitlines() if line.startswith("generate/am-thinking-v1 "))
    assert "1.31 attempts/query" in generate  # acceptance 0.76, four attempts


def test_plan_calibrate_reads_a_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    recipe = _recipe(run)
    run.mkdir()
    (run / "recipe.yaml").write_text(yaml.safe_dump(snapshot(recipe)))
    _manifest(run, "ingest", None, 0, 1000, 990, 5.0)
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(snapshot(recipe)))
    assert main(["plan", str(recipe_file), "--no-path-check", "--calibrate", str(run), "--nodes", "1"]) == 0
    out = capsys.readouterr().out
    assert f"measured in {run}" in out and "calibrated cost estimate" in out
    keep = next(line.split() for line in out.splitlines() if line.split()[:2] == ["ingest", "keep"])
    assert keep[-3:] == ["1", "0.99", "0.99"]  # configured, measured, ratio


def test_calibration_leaves_out_startup_and_skips_gpu_rates_measured_without_gpus(tmp_path: Path) -> None:
    run = tmp_path / "run"
    recipe = _recipe(run, decontaminate={"threshold": 0.9})  # decontaminate: a GPU stage given no GPUs here
    for index in range(2):
        _manifest(run, "generate", "t1", index, 100, 75, 100.0, attempts=150, accepted=75, completion_tokens=120_000)
    _manifest(run, "decontaminate", None, 0, 1000, 900, 50.0)
    inputs = _inputs()
    inputs.teachers["t1"] = inputs.teachers["t1"].model_copy(update={"startup_s": 20})
    inputs.steps["decontaminate"] = StepCost(rate=2000, startup_s=0)
    calibrated, rows = calibrate(inputs, recipe, measure_run(run))
    quantities = {(row.step, row.quantity): row for row in rows}
    # 200 s measured minus 2 x 20 s of engine start: 240k tokens in 160 s on 2 GPUs.
    assert quantities[("generate", "tokens/s per GPU")].measured == pytest.approx(750)
    assert quantities[("generate", "s per shard")].configured == pytest.approx(240 + 20)
    assert calibrated.teachers["t1"].tokens_per_s_per_gpu == pytest.approx(750)
    assert quantities[("decontaminate", "keep")].measured == pytest.approx(0.9)
    assert not any(row.step == "decontaminate" and "/s" in row.quantity for row in rows)
    assert calibrated.steps["decontaminate"].rate == 2000
    assert calibrated.steps["decontaminate"].keep == pytest.approx(0.9)


def test_a_teacher_on_cpus_is_costed_per_task(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path / "run")
    recipe.step("generate").resources = recipe.step("generate").resources.model_copy(update={"gpus_per_node": 0})
    row = next(r for r in estimate(recipe, _inputs(), 1) if r.key == "generate/t1")
    # 1.125M tokens at 250 tokens/s per task: 4500 task-seconds on 4 cores, no GPU-hours, 450 s a shard.
    assert row.kind == "cpu" and row.gpu_hours == 0
    assert row.cpu_hours == pytest.approx(4500 * 4 / 3600) and row.shard_s == pytest.approx(450)


def _rehearsal_table(path: Path, rates: dict[str, tuple[float, float]]) -> Path:
    """A table as `benchmarks/rehearsal.py --json` writes it: rows at both sizes (the larger one is used), each
    with its CPU-seconds per 1,000 records and per million tokens among the other columns."""
    def rows(scale: float) -> dict[str, dict[str, float]]:
        return {step: {"wall_s": 1.0, "cpu_s": 1.0, "records": 10, "cpu_s_per_1k_records": per_1k * scale,
                       "cpu_s_per_m_tokens": per_m * scale, "peak_rss_mb": 100.0, "task_mb": 10.0, "disk_mb": 1.0,
                       "files": 3, "tasks": 1} for step, (per_1k, per_m) in rates.items()}
    path.write_text(json.dumps({"sizes": [10, 100], "shard_size": 5, "cpu": "Test CPU 9000 (avx2), x86_64",
                                "stages": {"10": rows(3.0), "100": rows(1.0)}, "flagged": []}))
    return path


def test_a_rehearsal_table_prices_the_cpu_steps_at_its_measured_rates(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path / "run", pack={"max_tokens": 1000}, sft={"resources": {"gpus_per_node": 8}})
    table = load_rehearsal(_rehearsal_table(tmp_path / "rehearsal.json", {
        "ingest": (5.0, 999.0), "generate": (1.0, 1.0), "pack": (999.0, 2.0), "sft": (1.0, 1.0)}))
    assert table.cpu_model == "Test CPU 9000" and table.queries == 100
    inputs = _inputs()
    calibrated, rows = calibrate_cpu_rates(inputs, recipe, table)
    before = {row.key: row for row in estimate(recipe, inputs, 1)}
    after = {row.key: row for row in estimate(recipe, calibrated, 1)}
    # ingest reads queries: priced per record, 5 CPU-s per 1,000 = 200 records/s (configured 100): 1000 queries in
    # 5 task-seconds instead of 10, over 10 shards.
    assert before["ingest"].cpu_hours == pytest.approx(10 / 3600)
    assert after["ingest"].cpu_hours == pytest.approx(5 / 3600) and after["ingest"].shard_s == pytest.approx(0.5)
    assert after["ingest"].notes == ["rate measured on Test CPU 9000"]
    # pack reads traces: priced per token (the rehearsal scales trace lengths), 2 CPU-s per million tokens =
    # 500k tokens/s: 750 traces x 850 tokens = 637,500 tokens in 1.275 s (configured 1000 tokens/s: 637.5 s).
    assert before["pack/t1"].cpu_hours == pytest.approx(637.5 / 3600)
    assert after["pack/t1"].cpu_hours == pytest.approx(1.275 / 3600)
    assert after["pack/t1"].records_out == before["pack/t1"].records_out  # keep rates stay the configured ones
    # a step with GPUs and the teacher's step keep their configured rates, measured or not.
    for key in ("generate/t1", "generate/remote", "sft/t1"):
        assert after[key].gpu_hours == before[key].gpu_hours and after[key].notes == before[key].notes
    quantities = {(row.step, row.quantity): (row.configured, row.measured) for row in rows}
    assert quantities == {("ingest", "records/s per task"): (100, pytest.approx(200)),
                          ("pack", "tokens/s per task"): (1000, pytest.approx(500_000))}


def test_plan_calibrate_takes_a_rehearsal_table_and_names_its_cpu(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(snapshot(_recipe(tmp_path / "run"))))
    table = _rehearsal_table(tmp_path / "rehearsal.json", {"ingest": (5.0, 40.0)})
    assert main(["plan", str(recipe_file), "--no-path-check", "--calibrate", str(table), "--nodes", "1"]) == 0
    out = capsys.readouterr().out
    assert f"CPU rates measured by the rehearsal {table} at 100 queries on Test CPU 9000 (avx2), x86_64" in out
    estimates = out.split("calibrated cost estimate")
    assert len(estimates) == 2
    ingest = [next(line for line in part.splitlines() if line.startswith("ingest ")) for part in estimates]
    assert "rate measured" not in ingest[0] and ingest[1].endswith("rate measured on Test CPU 9000")
    assert ingest[0].split()[6] != ingest[1].split()[6]  # the CPU-h column


def test_a_file_that_is_not_a_rehearsal_table_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "rehearsal.json"
    path.write_text(json.dumps({"sizes": [10, 100], "cpu": "x", "stages": {"100": {"ingest": {"wall_s": 1.0}}}}))
    with pytest.raises(RecipeError, match=rf"{path}: not a table of benchmarks/rehearsal.py --json.*cpu_s_per_1k"):
        load_rehearsal(path)
    path.write_text("{")
    with pytest.raises(RecipeError, match="not a readable JSON file"):
        load_rehearsal(path)
