"""Pipeline schedule, ZeRO and resharding checkpoints over gloo, one process per rank (dist_worker.py).

Data: the real traces of conftest packed with SmolLM2's tokenizer (pack stage, 384-token bins); student: a
tiny random Llama with tied embeddings (tied weights are the hard case under pipeline parallelism).
Tolerances: everything runs in fp32; a different layout only changes the order of sums (TP all-reduces, DP
gradient sums), so gradients agree to rtol 1e-5 / atol 1e-7 and losses to rtol 1e-5.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from distillery.core.runner import run_task
from distillery.core.store import RunDir
from distillery.train.checkpoint import latest_checkpoint, load_full
from distillery.train.convert import hf_to_megatron, load_hf_state, megatron_to_hf, save_shards
from distillery.train.gpt import ModelShape
from distillery.train.pipeline import bubble_share, one_f_one_b

WORKER = Path(__file__).parent / "dist_worker.py"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(spec: dict[str, Any], world: int, folder: Path) -> list[subprocess.Popen]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"spec-{len(list(folder.glob('spec-*')))}.json"
    path.write_text(json.dumps(spec))
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "OMP_NUM_THREADS": "1"}
    return [subprocess.Popen([sys.executable, str(WORKER), str(path), str(rank), str(world)], env=env)
            for rank in range(world)]


def _run(spec: dict[str, Any], world: int, folder: Path) -> None:
    for process in _start(spec, world, folder):
        assert process.wait(timeout=600) == 0


def _metrics(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, traces_module, smollm2_dir, make_run, tiny_model) -> dict[str, Any]:
    """Packed real traces, a tiny tied Llama, and its converted shards for every layout the tests run."""
    root = tmp_path_factory.mktemp("parallel")
    student = tiny_model(root, "llama", tie=True, layers=2, tokenizer_from=smollm2_dir)
    run = make_run(root / "run", traces_module, {"pack": {"student": str(student), "max_tokens": 384}})
    run_task(str(run.root), "pack", "t1", "task", 0)
    shape = ModelShape.from_folder(student)
    hf = load_hf_state(student)
    initial = {}
    for tp, pp in ((1, 1), (2, 1), (1, 2)):
        initial[(tp, pp)] = root / f"initial-tp{tp}-pp{pp}"
        save_shards(hf_to_megatron(hf, shape, tp, pp), initial[(tp, pp)], shape)
    return {"student": str(student), "data": str(RunDir(run.root).packed("pack", "t1", 0)), "shape": shape,
            "initial": initial, "root": root}


@pytest.fixture(scope="module")
def traces_module(make_trace) -> list[dict[str, Any]]:
    import random

    rng = random.Random(7)
    return [make_trace(i, rng, multi_turn=i % 4 == 0) for i in range(40)]


def _spec(setup: dict[str, Any], name: str, tp: int = 1, pp: int = 1, **extra: Any) -> dict[str, Any]:
    folder = setup["root"] / name
    return {"student": setup["student"], "data": setup["data"], "initial": str(setup["initial"][(tp, pp)]),
            "work": str(folder / "work"), "out": str(folder / "out"), "tensor_parallel": tp,
            "pipeline_parallel": pp, "mode": "train", **extra}


def test_1f1b_order() -> None:
    assert one_f_one_b(0, 2, 4) == [("F", 0), ("F", 1), ("B", 0), ("F", 2), ("B", 1), ("F", 3), ("B", 2), ("B", 3)]
    assert one_f_one_b(1, 2, 4) == [("F", 0), ("B", 0), ("F", 1), ("B", 1), ("F", 2), ("B", 2), ("F", 3), ("B", 3)]
    for stages, count in ((4, 8), (4, 2), (3, 1)):
        for stage in range(stages):
            order = one_f_one_b(stage, stages, count)
            assert sorted(order) == sorted([("F", i) for i in range(count)] + [("B", i) for i in range(count)])
            live = peak = 0
            for kind, index in order:
                assert kind == "F" or ("F", index) in order[:order.index((kind, index))]
                live += 1 if kind == "F" else -1
                peak = max(peak, live)
            assert peak == min(stages - stage, count)  # 1F1B bounds the activations a stage holds


@pytest.mark.parametrize("model_type, tie", [("llama", True), ("qwen2", False)])
def test_rank_slices_assemble_the_hugging_face_tensors(tmp_path, tiny_model, model_type, tie) -> None:
    from distillery.train.layout import RankLayout

    folder = tiny_model(tmp_path, model_type, tie=tie, layers=4)
    shape, hf = ModelShape.from_folder(folder), load_hf_state(folder)
    tp, pp = 2, 2
    shards = hf_to_megatron(hf, shape, tp, pp)
    assembled: dict[str, list[torch.Tensor]] = {}
    for (tp_rank, pp_rank), shard in sorted(shards.items()):
        layout = RankLayout(shape, tp, pp, pp_rank)
        pieces = layout.to_global(shard)
        for name, piece in pieces.items():
            assembled.setdefault(name, []).append(piece.local)
            if piece.dim is None:
                torch.testing.assert_close(piece.local, hf[name], rtol=0, atol=0)
        # and back: the slices this rank reads rebuild its Megatron state exactly
        requests = layout.requests(shard)
        rebuilt = layout.from_global({name: pieces.get(name, piece).local for name, piece in requests.items()}, shard)
        for name, tensor in shard.items():
            torch.testing.assert_close(rebuilt[name], tensor, rtol=0, atol=0)
    expected = {name: tensor for name, tensor in hf.items() if not (tie and name == "lm_head.weight")}
    assert assembled.keys() == expected.keys()
    for name, parts in assembled.items():
        dim = 1 if name.endswith(("o_proj.weight", "down_proj.weight")) else 0
        whole = parts[0] if parts[0].shape == expected[name].shape else torch.cat(parts, dim=dim)
        torch.testing.assert_close(whole, expected[name], rtol=0, atol=0, msg=name)


def test_recompute_on_cpu_says_what_it_does_instead(tmp_path, tiny_model, megatron_single, caplog) -> None:
    from distillery.train.gpt import build_model

    shape = ModelShape.from_folder(tiny_model(tmp_path, "llama"))
    with caplog.at_level("WARNING", logger="distillery.train.gpt"):
        model = build_model(shape, 1, 1, torch.float32, torch.device("cpu"), recompute="full", recompute_num_layers=2)
    assert "on CPU every activation is kept for backward (no recompute" in caplog.text
    assert model.config.recompute_granularity is None
    with pytest.raises(ValueError, match="recompute must be one of"):
        build_model(shape, 1, 1, torch.float32, torch.device("cpu"), recompute="partial")


@pytest.mark.slow
def test_bubble_share_matches_formula(tmp_path) -> None:
    # a stage that sleeps 80 ms forward and 160 ms backward: compute time that CPU load does not stretch
    stages, count = 4, 8
    _run({"mode": "bubble", "seconds": 0.08, "micro_batches": count, "out": str(tmp_path)}, stages, tmp_path)
    measured = [json.loads((tmp_path / f"bubble-{rank}.json").read_text()) for rank in range(stages)]
    expected = bubble_share(stages, count)  # 3/11 = 0.27
    for shares in measured:
        # messages and barriers add a little idle time on top of the formula, never less than it
        assert expected - 0.02 <= shares["1f1b"] <= expected + 0.06, (shares, expected)
        assert shares["one_at_a_time"] == pytest.approx((stages - 1) / stages, abs=0.06)


def _merged_grads(out: Path, tp: int, pp: int, shape: ModelShape) -> dict[str, torch.Tensor]:
    shards = {(t, p): torch.load(out / f"grads-tp{t}-pp{p}-dp0.pt") for t in range(tp) for p in range(pp)}
    return megatron_to_hf(shards, shape)


@pytest.mark.slow
def test_pipeline_1f1b_gives_the_gradients_of_one_stage(setup) -> None:
    # global batch 4, one data-parallel replica: PP=2 runs four micro-batches through 1F1B
    settings = {"global_batch": 4, "grad_clip": 0.0}
    _run(_spec(setup, "grads-pp1", mode="grads", settings=settings), 1, setup["root"])
    _run(_spec(setup, "grads-pp2", pp=2, mode="grads", settings=settings), 2, setup["root"])
    one = _merged_grads(setup["root"] / "grads-pp1" / "out", 1, 1, setup["shape"])
    two = _merged_grads(setup["root"] / "grads-pp2" / "out", 1, 2, setup["shape"])
    assert one.keys() == two.keys()
    for name, grad in one.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(two[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    # and the tied output copy on the last stage took the same gradient as the embedding
    last = torch.load(setup["root"] / "grads-pp2" / "out" / "grads-tp0-pp1-dp0.pt")
    torch.testing.assert_close(last["output_layer.weight"], two["model.embed_tokens.weight"])


@pytest.fixture(scope="module")
def reference(setup) -> list[dict[str, Any]]:
    """Six uninterrupted steps at TP=PP=DP=1: the loss curve every resumed run must continue."""
    spec = _spec(setup, "reference", settings={"global_batch": 2, "max_steps": 6, "warmup_fraction": 0.2})
    _run(spec, 1, setup["root"])
    curve = _metrics(Path(spec["out"]))
    assert [r["step"] for r in curve] == list(range(1, 7))
    return curve


@pytest.mark.slow
@pytest.mark.parametrize("before, after", [((2, 1, 1), (1, 1, 1)), ((1, 2, 1), (1, 1, 1)), ((1, 1, 2), (1, 1, 1)),
                                           ((1, 1, 1), (2, 1, 1))], ids=["tp2-to-tp1", "pp2-to-pp1", "dp2-to-dp1",
                                                                         "tp1-to-tp2"])
def test_resume_with_another_layout_continues_the_curve(setup, reference, before, after) -> None:
    settings = {"global_batch": 2, "max_steps": 6, "warmup_fraction": 0.2}
    name = "resume-" + "-".join(map(str, before + after))
    tp, pp, dp = before
    first = _spec(setup, name, tp=tp, pp=pp, settings=settings, stop_at=3)
    _run(first, tp * pp * dp, setup["root"])
    checkpoint = latest_checkpoint(Path(first["work"]) / "checkpoints", "test")
    assert checkpoint is not None and checkpoint.name == "step-00000003"
    assert json.loads((checkpoint / "meta.json").read_text())["save_s"] > 0
    tp, pp, dp = after
    _run(_spec(setup, name, tp=tp, pp=pp, settings=settings), tp * pp * dp, setup["root"])
    curve = _metrics(Path(first["out"]))
    assert [r["step"] for r in curve] == list(range(1, 7))
    for mine, ref in zip(curve, reference):
        assert mine["loss"] == pytest.approx(ref["loss"], rel=1e-5), mine["step"]
        assert mine["lr"] == pytest.approx(ref["lr"], rel=1e-9)
        assert mine["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-4)
    # the last checkpoint is the Hugging Face state of the reference's final weights
    final = load_full(latest_checkpoint(Path(first["work"]) / "checkpoints", "test"), "model/")
    expected = load_full(latest_checkpoint(setup["root"] / "reference" / "work" / "checkpoints", "test"), "model/")
    assert final.keys() == expected.keys()
    for key, tensor in expected.items():
        torch.testing.assert_close(final[key], tensor, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_killed_save_leaves_the_previous_checkpoint(setup) -> None:
    settings = {"global_batch": 2, "max_steps": 5, "keep_checkpoints": 2, "save_every": 2}
    spec = _spec(setup, "killed", settings=settings, mode="kill_in_save", stop_at=2)
    [process] = _start(spec, 1, setup["root"])
    assert process.wait(timeout=600) == -signal.SIGKILL
    root = Path(spec["work"]) / "checkpoints"
    partial = root / ".step-00000003.partial"
    assert list(partial.glob("*.distcp")), "the kill came after the tensors were written"
    assert not (partial / "meta.json").exists()
    assert latest_checkpoint(root, "test") == root / "step-00000002"
    # the resumed run starts from step 2, finishes, and clears the leftover
    _run({**spec, "mode": "train", "stop_at": None}, 1, setup["root"])
    curve = _metrics(Path(spec["out"]))
    assert [r["step"] for r in curve] == [1, 2, 3, 4, 5]
    assert not partial.exists()
    assert sorted(p.name for p in root.iterdir()) == ["step-00000004", "step-00000005"]  # keep the last 2


@pytest.mark.slow
def test_zero_sharding_gives_the_weights_of_the_unsharded_optimizer(setup) -> None:
    settings = {"global_batch": 4, "max_steps": 3, "weight_decay": 0.1}
    sharded = _spec(setup, "zero-on", settings={**settings, "distributed_optimizer": True})
    plain = _spec(setup, "zero-off", settings={**settings, "distributed_optimizer": False})
    _run(sharded, 2, setup["root"])
    _run(plain, 2, setup["root"])
    runs = {name: [torch.load(Path(spec["out"]) / f"final-tp0-pp0-dp{r}.pt") for r in range(2)]
            for name, spec in (("sharded", sharded), ("plain", plain))}
    for rank in range(2):
        for key, weight in runs["plain"][rank]["weights"].items():
            torch.testing.assert_close(runs["sharded"][rank]["weights"][key], weight, rtol=1e-6, atol=1e-7)
    # each sharded rank holds part of the moments, together exactly the plain optimizer's
    held = [r["state_elements"] for r in runs["sharded"]]
    assert all(0 < count < runs["plain"][0]["state_elements"] for count in held)
    assert sum(held) == runs["plain"][0]["state_elements"]
