"""Model FLOPs per trained sequence and model FLOPs utilisation (MFU)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from distillery.train.gpt import ModelShape

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
"""Dense bf16 peak of known accelerators (the spec sheet, as platform.md measures MFU against)."""


def training_flops(shape: ModelShape, document_lengths: Sequence[int]) -> float:
    """Forward + backward FLOPs: 6 x (matmul parameters) per token plus causal attention per document.

    Matmul parameters are every weight except the input embedding lookup (the output projection counts, tied or
    not). Attention per layer and document of length L: QK^T and AV are 2 x 2 x L^2 x d_q FLOPs forward, halved
    by causality, tripled for the backward pass.
    """
    embedding = shape.vocab_size * shape.hidden_size
    matmul_params = shape.parameter_count() - embedding * (1 if shape.tie_embeddings else 2) + embedding
    tokens = sum(document_lengths)
    query_dim = shape.num_heads * shape.head_dim
    attention = 6.0 * shape.num_layers * query_dim * sum(length * length for length in document_lengths)
    return 6.0 * matmul_params * tokens + attention


def peak_flops(device: torch.device, configured_tflops: float | None) -> float | None:
    """Peak FLOP/s of one device: the configured value, else a known accelerator's spec, else unknown (None)."""
    if configured_tflops is not None:
        return configured_tflops * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in PEAK_BF16_TFLOPS.items():
            if key in name:
                return tflops * 1e12
    return None
