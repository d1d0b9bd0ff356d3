"""SFT with Megatron-core on CPU: tensor and data parallel equal a single rank, the loss falls on real traces,
and a killed run resumes onto the uninterrupted loss curve."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from distillery.core.runner import run_task
from distillery.core.store import RunDir, ids_digest
from distillery.train.checkpoint import read_meta, saved_names


def _metrics(run_root: Path) -> list[dict]:
    return [json.loads(line) for line in (run_root / "sft" / "t1" / "metrics.jsonl").read_text().splitlines()]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _launch_ranks(run_root: Path, world_size: int) -> list[subprocess.Popen]:
    """One process per rank, as the SLURM executor's srun tasks would be."""
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "OMP_NUM_THREADS": "1"}
    code = ("import sys; from distillery.core.runner import run_task; "
            "run_task(sys.argv[1], 'sft', 't1', 'task', 0, rank=int(sys.argv[2]), world_size=int(sys.argv[3]))")
    return [subprocess.Popen([sys.executable, "-c", code, str(run_root), str(rank), str(world_size)], env=env)
            for rank in range(world_size)]


def _wait(processes: list[subprocess.Popen], timeout: float = 300) -> None:
    for process in processes:
        assert process.wait(timeout=timeout) == 0


def _prepare(tmp_path: Path, name: str, traces, make_run, student: Path | str, sft: dict) -> Path:
    run = make_run(tmp_path / name, traces, {"pack": {"student": str(student), "max_tokens": 384},
                                             "sft": {"student": str(student), **sft}})
    run_task(str(run.root), "pack", "t1", "task", 0)
    return run.root


@pytest.mark.slow
def test_tensor_pipeline_and_data_parallel_match_one_rank(tmp_path, traces, make_run, tiny_model, smollm2_dir,
                                                          megatron_single) -> None:
    # tied embeddings: under pipeline parallelism the two copies must take the same update
    student = tiny_model(tmp_path, "llama", tie=True, tokenizer_from=smollm2_dir)
    # 17 bins in steps of 4: the last step holds one bin, so one data-parallel rank has nothing to do there
    sft = {"lr": 1e-3, "global_batch": 4, "epochs": 1, "warmup_fraction": 0.0, "save_every": 10, "grad_clip": 0.5,
           "precision": "fp32"}  # equal curves across layouts are an fp32 property
    single = _prepare(tmp_path, "tp1", traces, make_run, student, sft)
    run_task(str(single), "sft", "t1", "task", 0)
    tensor = _prepare(tmp_path, "tp2", traces, make_run, student, {**sft, "tensor_parallel": 2})
    _wait(_launch_ranks(tensor, 2))
    data = _prepare(tmp_path, "dp2", traces, make_run, student, sft)
    _wait(_launch_ranks(data, 2))
    pipeline = _prepare(tmp_path, "pp2", traces, make_run, student, {**sft, "pipeline_parallel": 2})
    _wait(_launch_ranks(pipeline, 2))
    reference = _metrics(single)
    assert [r["bins"] for r in reference] == [4, 4, 4, 4, 1]
    for other in (tensor, data, pipeline):
        curve = _metrics(other)
        assert [r["loss_tokens"] for r in curve] == [r["loss_tokens"] for r in reference]
        for mine, ref in zip(curve, reference):
            assert mine["loss"] == pytest.approx(ref["loss"], rel=1e-5)
            assert mine["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-4)
    # the exported students agree too: TP and PP shards are merged back into the same Hugging Face weights
    one = AutoModelForCausalLM.from_pretrained(single / "sft" / "t1" / "hf").state_dict()
    for other in (tensor, pipeline):
        two = AutoModelForCausalLM.from_pretrained(other / "sft" / "t1" / "hf").state_dict()
        for name, weight in one.items():
            torch.testing.assert_close(two[name], weight, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_loss_decreases_on_smollm2(tmp_path, traces, make_run, megatron_single) -> None:
    # two short traces packed into one bin, trained on for three epochs: every step sees the same tokens
    sft = {"lr": 2e-4, "global_batch": 1, "epochs": 3, "warmup_fraction": 0.0, "save_every": 100, "peak_tflops": 1.0}
    root = _prepare(tmp_path, "smollm2", [traces[1], traces[3]], make_run, "smollm2", sft)
    result = run_task(str(root), "sft", "t1", "task", 0)
    curve = _metrics(root)
    assert [r["step"] for r in curve] == [1, 2, 3]
    assert {r["bins"] for r in curve} == {1} and len({r["loss_tokens"] for r in curve}) == 1
    losses = [r["loss"] for r in curve]
    assert losses[2] < losses[1] < losses[0], losses
    assert all(r["tokens_per_s"] > 0 and r["lr"] > 0 and r["loss_tokens"] > 0 for r in curve)
    assert result["stats"]["steps"] == 3
    # throughput counts trained tokens; masked prompt tokens and bin padding are reported beside it
    stats = result["stats"]
    assert stats["loss_tokens"] == sum(r["loss_tokens"] for r in curve)
    assert stats["masked_tokens"] == sum(r["tokens"] - r["loss_tokens"] for r in curve) > 0
    assert stats["padding_tokens"] == sum(r["padding_tokens"] for r in curve) == 3 * (384 - curve[0]["tokens"])
    assert 0 < stats["mfu"] < stats["mfu_documents"] and stats["tokens_per_s"] > 0
    assert all(r["tokens_per_s"] < r["document_tokens_per_s"] for r in curve)
    exported = AutoModelForCausalLM.from_pretrained(root / "sft" / "t1" / "hf")
    assert exported.config.model_type == "llama"


@pytest.mark.slow
def test_kill_and_resume_reproduces_the_curve(tmp_path, traces, make_run, tiny_model, smollm2_dir,
                                              megatron_single) -> None:
    student = tiny_model(tmp_path, "llama", tie=True, tokenizer_from=smollm2_dir)
    sft = {"lr": 1e-3, "global_batch": 2, "epochs": 2, "max_steps": 12, "warmup_fraction": 0.1, "save_every": 2,
           "keep_checkpoints": 1, "precision": "fp32"}
    straight = _prepare(tmp_path, "straight", traces, make_run, student, sft)
    run_task(str(straight), "sft", "t1", "task", 0)
    curve = _metrics(straight)
    assert [r["step"] for r in curve] == list(range(1, 13))

    killed = _prepare(tmp_path, "killed", traces, make_run, student, sft)
    [process] = _launch_ranks(killed, 1)
    checkpoints = killed / "sft" / "t1" / "_work" / "shard-00000" / "checkpoints"
    deadline = time.time() + 240
    while not (checkpoints / "step-00000002" / "meta.json").exists() and process.poll() is None \
            and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed mid-way"
    assert not (killed / "sft" / "t1" / "shard-00000.done.json").exists()
    assert len(_metrics(killed)) < 12
    resumed = run_task(str(killed), "sft", "t1", "task", 0)
    assert 2 <= resumed["stats"]["resumed_at"] < 12
    again = _metrics(killed)
    assert [r["step"] for r in again] == list(range(1, 13))
    for mine, ref in zip(again, curve):
        assert mine["loss"] == pytest.approx(ref["loss"], rel=1e-6, abs=1e-7)
        assert mine["lr"] == pytest.approx(ref["lr"], rel=1e-12)
        assert mine["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-5)
    # only the newest checkpoint is kept
    assert [p.name for p in checkpoints.glob("step-*")] == ["step-00000012"]
    # a changed config trains from the start: the finished checkpoint of the old config is not resumed
    recipe = yaml.safe_load((killed / "recipe.yaml").read_text())
    recipe["steps"]["sft"]["lr"] = 5e-4
    (killed / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    changed = run_task(str(killed), "sft", "t1", "task", 0)
    assert changed["stats"]["resumed_at"] == 0
    assert _metrics(killed)[-1]["step"] == 12 and _metrics(killed)[0]["lr"] != curve[0]["lr"]


def test_finished_training_checkpoint_holds_weights_only_and_still_exports(tmp_path, traces, make_run, tiny_model,
                                                                           smollm2_dir, megatron_single) -> None:
    student = tiny_model(tmp_path, "llama", tie=True, tokenizer_from=smollm2_dir)
    sft = {"lr": 1e-3, "global_batch": 4, "epochs": 1, "max_steps": 3, "save_every": 2, "keep_checkpoints": 2,
           "precision": "fp32"}
    root = _prepare(tmp_path, "final", traces, make_run, student, sft)
    run_task(str(root), "sft", "t1", "task", 0)
    run = RunDir(root)
    checkpoints = run.work_dir("sft", "t1", 0) / "checkpoints"
    middle, final = checkpoints / "step-00000002", checkpoints / "step-00000003"
    # inside the plan: weights and both AdamW moments; at its end: the weights alone, a third of the bytes
    weights = {name.removeprefix("model/") for name in saved_names(middle) if name.startswith("model/")}
    assert weights and set(saved_names(middle)) == {f"{kind}/{name}" for name in weights
                                                    for kind in ("model", "optim/exp_avg", "optim/exp_avg_sq")}
    assert set(saved_names(final)) == {f"model/{name}" for name in weights}
    assert [read_meta(p)["moments"] for p in (middle, final)] == [True, False]

    def size(folder: Path) -> int:
        return sum(p.stat().st_size for p in folder.iterdir())

    assert size(final) < 0.4 * size(middle)
    exported = AutoModelForCausalLM.from_pretrained(run.hf_export("sft", "t1")).state_dict()
    # killed after the final checkpoint, before the manifest and the export: the rerun trains nothing and exports
    manifest = run.shard("sft", "t1", 0).manifest
    manifest.unlink()
    shutil.rmtree(run.hf_export("sft", "t1"))
    again = run_task(str(root), "sft", "t1", "task", 0)
    assert again["stats"]["resumed_at"] == 3 and again["stats"]["final_loss"] is None
    assert [r["step"] for r in _metrics(root)] == [1, 2, 3]
    for name, weight in AutoModelForCausalLM.from_pretrained(run.hf_export("sft", "t1")).state_dict().items():
        torch.testing.assert_close(weight, exported[name], rtol=0, atol=0)
    # a checkpoint without moments inside the plan is never trained on from
    manifest.unlink()
    shutil.rmtree(final)
    (middle / "meta.json").write_text(json.dumps({**read_meta(middle), "moments": False}))
    with pytest.raises(ValueError, match="holds no optimizer state"):
        run_task(str(root), "sft", "t1", "task", 0)


def test_sft_trains_on_every_pack_shard(tmp_path, traces, make_run, tiny_model, smollm2_dir, megatron_single) -> None:
    """Two pack tasks: sft reads both files as one dataset, and its input digest is both pack shards' output."""
    student = tiny_model(tmp_path, "llama", tie=True, tokenizer_from=smollm2_dir)
    run = make_run(tmp_path / "run", traces, {
        "pack": {"student": str(student), "max_tokens": 384, "input_shards_per_task": 1},
        "sft": {"student": str(student), "global_batch": 4, "epochs": 1, "max_steps": 2, "save_every": 2,
                "precision": "fp32", "export_hf": False}}, num_shards=2)
    packs = [run_task(str(run.root), "pack", "t1", "task", shard) for shard in (0, 1)]
    assert all(pack["kept"] for pack in packs)
    result = run_task(str(run.root), "sft", "t1", "task", 0)
    assert result["kept"] == sum(pack["kept"] for pack in packs) == len(traces)
    assert result["stats"]["bins"] == sum(pack["stats"]["bins"] for pack in packs)
    assert result["input_ids_digest"] == ids_digest([pack["output_ids_digest"] for pack in packs])
