"""What a training reports: each step's throughput, the run's medians, and the metrics log (one JSON line a step).

Throughput counts useful tokens, those the loss trains on: `tokens_per_s` and `mfu` leave out packing padding
and masked (prompt) tokens, which are reported separately; `mfu_documents` is the usual MFU over every document
token (the FLOPs the step really ran, padding excluded).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from distillery.core.store import atomic_write
from distillery.train.flops import training_flops
from distillery.train.gpt import ModelShape


def step_throughput(shape: ModelShape, docs: list[list[int]], loss_tokens: float, capacity: int, elapsed: float,
                    world: int, peak: float | None) -> dict[str, Any]:
    """Token counts and rates of one step over bins whose document lengths are `docs` (one list a bin)."""
    tokens = sum(sum(d) for d in docs)
    flops = sum(training_flops(shape, d) for d in docs)
    useful_flops = flops * loss_tokens / max(tokens, 1)
    return {
        "bins": len(docs), "tokens": tokens, "loss_tokens": int(loss_tokens),
        "masked_tokens": tokens - int(loss_tokens), "padding_tokens": len(docs) * capacity - tokens,
        "step_s": round(elapsed, 4), "tokens_per_s": loss_tokens / elapsed, "document_tokens_per_s": tokens / elapsed,
        "tflops_per_device": flops / elapsed / world / 1e12,
        "mfu": useful_flops / elapsed / world / peak if peak else None,
        "mfu_documents": flops / elapsed / world / peak if peak else None,
    }


def throughput_summary(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of this run's steps (the first, which compiles, included) and token totals, for the manifest."""
    if not history:
        return {}
    mfu = [r["mfu"] for r in history if r["mfu"] is not None]
    mfu_documents = [r["mfu_documents"] for r in history if r["mfu_documents"] is not None]
    return {"tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in history), 2),
            "mfu": round(statistics.median(mfu), 4) if mfu else None,
            "mfu_documents": round(statistics.median(mfu_documents), 4) if mfu_documents else None,
            **{key: sum(r[key] for r in history) for key in ("loss_tokens", "masked_tokens", "padding_tokens")}}


class MetricsLog:
    """The metrics file of a training, written by one rank (`writer`); the others' calls do nothing."""

    def __init__(self, path: Path, writer: bool) -> None:
        self.path = path
        self.writer = writer

    def truncate(self, upto_step: int) -> None:
        """Drop the steps after `upto_step` (a resumed run redoes them), so the log reads like one run."""
        if not self.writer:
            return
        kept: list[str] = []
        if upto_step and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line and json.loads(line)["step"] <= upto_step]
        with atomic_write(self.path) as out:
            out.write("".join(line + "\n" for line in kept))

    def append(self, record: dict[str, Any]) -> None:
        if self.writer:
            with self.path.open("a") as out:
                out.write(json.dumps(record) + "\n")
