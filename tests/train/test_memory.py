"""The per-GPU memory arithmetic of the sft step, and `distillery plan` printing it for the paper's recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distillery.cli import main
from distillery.train.gpt import build_model
from distillery.train.memory import GIB, Layout, memory_rows, student_shape

RECIPE = Path(__file__).resolve().parents[2] / "jobs" / "am-thinking-distill.yaml"


def test_plan_prints_the_memory_table_of_the_paper_recipe(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setenv("DISTILLERY_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("DISTILLERY_DATA", str(tmp_path / "data"))
    assert main(["plan", str(RECIPE), "--no-path-check"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("per-GPU memory of sft"):]
    assert table.startswith("per-GPU memory of sft at 32768 tokens per bin: 32.8B parameters, TP=8 PP=1 DP=4")
    for row in ("weights (fp32)", "gradients (fp32)", "AdamW moments (fp32)", "activations (full recompute",
                "logits and loss"):
        assert row in table
    total_line = next(line for line in table.splitlines() if line.strip().startswith("total"))
    assert float(total_line.split()[1]) < 80 and total_line.endswith("fits")
    # the recipe's old layout (PP=4 with DP=1) is among the options, with its pipeline bubble
    assert "TP=8 PP=4 DP=1" in table and "TP=1 PP=1 DP=32" in table and "(over)" in table


def test_arithmetic_follows_the_layout() -> None:
    shape = student_shape("/models/Qwen2.5-32B")
    assert shape is not None and shape.parameter_count() == pytest.approx(32.76e9, rel=0.01)

    def total(layout: Layout, key: str) -> float:
        rows = memory_rows(shape, layout, 32768, 16)
        return sum(value for name, value in rows.items() if name.startswith(key))

    base = Layout(8, 1, 4, "full", 4)
    # ZeRO divides the moments by the data-parallel size, and only them
    unsharded = Layout(8, 1, 4, "full", 4, sharded_optimizer=False)
    assert total(unsharded, "AdamW") == pytest.approx(4 * total(base, "AdamW"))
    assert total(unsharded, "weights") == total(base, "weights")
    # fp32 weights of a TP rank: 4 bytes x parameters / 8 (norms are a rounding error)
    assert total(base, "weights") == pytest.approx(4 * shape.parameter_count() / 8, rel=0.01)
    # recompute: off > selective > full; pipeline stages split the weights but not the first stage's activations
    assert total(Layout(8, 1, 4, "off", 1), "activations") > total(Layout(8, 1, 4, "selective", 1), "activations") \
        > total(base, "activations")
    assert total(Layout(8, 4, 1, "full", 4), "activations") == pytest.approx(total(base, "activations"))
    assert total(Layout(8, 4, 1, "full", 4), "weights") == pytest.approx(total(base, "weights") / 4, rel=0.05)


def test_weights_row_matches_a_built_model(tmp_path, tiny_model, megatron_single) -> None:
    folder = tiny_model(tmp_path, "qwen2", tie=False)
    shape = student_shape(str(folder))
    assert shape is not None
    model = build_model(shape, 1, 1, torch.float32, torch.device("cpu"))
    measured = sum(p.numel() * p.element_size() for p in model.parameters())
    estimated = memory_rows(shape, Layout(1, 1, 1, "off", 1), 128, 1)["weights (fp32)"]
    # the arithmetic leaves out norms and biases: a few percent on a 64-wide model, far less at 32B
    assert estimated == pytest.approx(measured, rel=0.05)
    assert estimated / GIB < 1
