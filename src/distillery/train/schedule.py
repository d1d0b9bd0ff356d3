"""The paper's learning-rate schedule: linear warmup over a fraction of the steps, then cosine decay to a floor."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total_steps: int, warmup_fraction: float, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak learning rate for optimizer step `step` (0-based) of `total_steps`.

    Warmup rises linearly to the peak at the last warmup step; the cosine then starts at the peak and would reach
    `min_ratio` one step after the last, so every step trains with a non-zero rate.
    """
    warmup = max(1, math.ceil(warmup_fraction * total_steps)) if warmup_fraction > 0 else 0
    if step < warmup:
        return (step + 1) / warmup
    decay_steps = max(1, total_steps - warmup)
    progress = min(1.0, (step - warmup) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
