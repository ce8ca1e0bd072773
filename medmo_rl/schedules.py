"""Learning-rate schedules (pure)."""
from __future__ import annotations

import math


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """LR multiplier: linear warm-up then cosine decay to `min_ratio` (nanoGPT's get_lr shape).

        step < W:        (step + 1) / W
        W ≤ step < N:    min + (1 − min) · ½ · (1 + cos(π · (step − W) / (N − W)))
        step ≥ N:        min
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if step >= total_steps:
        return min_ratio
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def constant_with_warmup(step: int, total_steps: int, warmup_steps: int) -> float:
    return (step + 1) / warmup_steps if warmup_steps > 0 and step < warmup_steps else 1.0


def lr_multiplier(kind: str, step: int, total_steps: int, warmup_steps: int) -> float:
    if kind == "cosine":
        return warmup_cosine(step, total_steps, warmup_steps)
    if kind == "constant":
        return constant_with_warmup(step, total_steps, warmup_steps)
    raise ValueError(f"lr_scheduler {kind!r}; allowed: 'cosine', 'constant'")
