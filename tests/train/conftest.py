"""Fixtures of the training tests: small traces, a run directory with a finished trace step."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from distillery.schema.records import Attempt, Trace, make_query
from distillery.core.runner import load_run_recipe
from distillery.core.store import RunDir
from distillery.testing import finish_shard
from distillery.testing.stages import trace_recipe
from distillery.train.binpack import share


def _make_trace(index: int, rng: random.Random, teacher: str = "t1", multi_turn: bool = False) -> dict[str, Any]:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    messages = [{"role": "user", "content": f"What is {a} plus {b}? Question {index}."}]
    if multi_turn:
        messages = [{"role": "user", "content": "Hello there."},
                    {"role": "assistant", "content": "Hello! How can I help?"}] + messages
    query = make_query("math", messages, source="test")
    steps = " ".join(f"{a} plus {k} is {a + k}." for k in range(1, 1 + rng.randint(1, 6) * (1 + index % 3)))
    response = f"<think>{steps} So {a} plus {b} is {a + b}.</think><answer>{a + b}</answer>"
    trace = Trace(query=query, teacher=teacher, attempts=[Attempt(index=0, seed=index, response=response, score=1.0,
                                                                   passed=True)], accepted=0)
    return trace.model_dump(mode="json")


@pytest.fixture
def traces() -> list[dict[str, Any]]:
    rng = random.Random(7)
    return [_make_trace(i, rng, multi_turn=i % 4 == 0) for i in range(40)]


def _make_run(root: Path, records: list[dict[str, Any]], steps: dict[str, Any], teacher: str = "t1",
              num_shards: int = 1) -> RunDir:
    """A run directory whose first step (`traces`) is finished with `records` for `teacher`, dealt in order into
    `num_shards` even shards."""
    root.mkdir(parents=True, exist_ok=True)
    recipe = trace_recipe(root, steps, teacher, num_shards=num_shards)
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    run = RunDir(root)
    for shard_index in range(num_shards):
        part = share(len(records), num_shards, shard_index)
        finish_shard(run, "traces", teacher, shard_index, records[part.start:part.stop], recipe=load_run_recipe(run))
    return run


@pytest.fixture(scope="session")
def make_trace():
    """Builds one trace record: make_trace(index, rng)."""
    return _make_trace


@pytest.fixture(scope="session")
def make_run():
    """Builds a run directory whose `traces` step is finished: make_run(root, records, steps)."""
    return _make_run


def tiny_hf_folder(root: Path, model_type: str, tie: bool = False, seed: int = 0, layers: int = 2,
                   tokenizer_from: Path | None = None) -> Path:
    """A small random Llama or Qwen2 with even head counts (SmolLM2's 9 heads cannot be split in two)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    vocab = 256
    if tokenizer_from is not None:
        vocab = int(json.loads((tokenizer_from / "config.json").read_text())["vocab_size"])
    config = AutoConfig.for_model(model_type, vocab_size=vocab, hidden_size=64, intermediate_size=128,
                                  num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                  max_position_embeddings=512, tie_word_embeddings=tie, rms_norm_eps=1e-6)
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    with torch.no_grad():  # make biases and norms non-trivial so a wrong mapping shows
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
    folder = root / f"tiny-{model_type}{'-tied' if tie else ''}"
    model.save_pretrained(folder, safe_serialization=True)
    if tokenizer_from is not None:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(tokenizer_from).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model():
    """Builds a small random HF folder: tiny_model(root, "llama" | "qwen2", tie=False)."""
    return tiny_hf_folder


@pytest.fixture(scope="session")
def megatron_single():
    """This process as a one-rank gloo world with Megatron's parallel state (TP=PP=1)."""
    import torch

    from distillery.train.parallel import init_distributed, init_megatron

    init_distributed(0, 1, torch.device("cpu"))
    init_megatron(1, 1, seed=0, device=torch.device("cpu"))
    yield
