"""The `cluster` extra's CUDA builds are picked up where they are installed: decontamination puts its FAISS index on
the GPUs when the faiss build has them, embeddings go to cuda, and the vLLM backend drops its CPU defaults.

No GPU here: the CUDA packages' presence is stated explicitly with stand-ins (a faiss with GPU symbols that
delegates to the real faiss-cpu, `torch.cuda.is_available` answering True, a `vllm` module recording what the
engine was given). The CPU side runs against the real faiss-cpu and torch of this machine.
"""

from __future__ import annotations

import os
import sys
import types
from typing import Any

import faiss
import numpy as np
import pytest
import torch

from distillery.hardware import choose_dtype
from distillery.llm.vllm_engine import CPU_ENVIRONMENT, VLLMChatModel
from distillery.prepare import contamination
from distillery.prepare.benchsets import BenchItem
from distillery.prepare.contamination import BenchmarkIndex
from distillery.prepare.embed import resolve_device

ITEMS = [BenchItem("math500", str(i), text) for i, text in enumerate(
    ["What is the sum of 2 and 3?", "Find all real x with x^2 = 4.", "How many primes are below 20?"])]


def faiss_gpu_build(gpus: int, moved: list[Any]) -> types.ModuleType:
    """faiss-gpu as far as distillery looks at it: the real faiss plus GPU placement over `gpus` devices."""
    stand_in = types.ModuleType("faiss")
    stand_in.__dict__.update(vars(faiss))
    stand_in.get_num_gpus = lambda: gpus

    def index_cpu_to_all_gpus(index: Any) -> Any:
        moved.append(index)
        return index  # searched on the CPU here; the placement decision is what is under test
    stand_in.index_cpu_to_all_gpus = index_cpu_to_all_gpus
    return stand_in


def _embeddings() -> np.ndarray:
    vectors = np.random.default_rng(0).standard_normal((len(ITEMS), 16)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_decontamination_index_stays_on_cpu_with_faiss_cpu() -> None:
    assert faiss.get_num_gpus() == 0  # the real faiss-cpu of this machine
    assert not BenchmarkIndex(ITEMS, _embeddings()).on_gpu


@pytest.mark.parametrize(("gpus", "use_gpu", "on_gpu"), [(8, True, True), (0, True, False), (8, False, False)])
def test_decontamination_index_goes_to_the_gpus_with_faiss_gpu(monkeypatch: pytest.MonkeyPatch, gpus: int,
                                                               use_gpu: bool, on_gpu: bool) -> None:
    moved: list[Any] = []
    monkeypatch.setattr(contamination, "faiss", faiss_gpu_build(gpus, moved))
    embeddings = _embeddings()
    index = BenchmarkIndex(ITEMS, embeddings, use_gpu=use_gpu)
    assert index.on_gpu is on_gpu and len(moved) == int(on_gpu)
    assert [row[0] for row in index.nearest(embeddings, 1)] == [0, 1, 2]


@pytest.mark.parametrize("cuda", [True, False])
def test_embeddings_follow_cuda(monkeypatch: pytest.MonkeyPatch, cuda: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert resolve_device("auto") == ("cuda" if cuda else "cpu")
    assert resolve_device("cpu") == "cpu"


@pytest.mark.parametrize("cuda", [True, False])
def test_vllm_backend_keeps_cpu_defaults_off_gpus(monkeypatch: pytest.MonkeyPatch, cuda: bool) -> None:
    given: dict[str, Any] = {}

    class LLM:  # the CUDA vllm cannot run here: record what the engine would be built with
        def __init__(self, **options: Any) -> None:
            given.update(options)

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    for key in CPU_ENVIRONMENT:
        monkeypatch.delenv(key, raising=False)
    VLLMChatModel("/models/teacher", {"tensor_parallel_size": 8})
    assert given["tensor_parallel_size"] == 8 and given["model"] == "/models/teacher"
    assert ("enforce_eager" in given) is not cuda
    assert all((key in os.environ) is not cuda for key in CPU_ENVIRONMENT)
    assert given["dtype"] == ("bfloat16" if cuda else choose_dtype("vllm", "cpu").dtype)
