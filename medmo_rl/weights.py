"""Weights in transit from a learner to the rollout engines: cut into object-store-sized buckets.
Pure: torch tensors in, lists out (the rollout pool and the learner group both use it)."""
from __future__ import annotations

from typing import Any, Iterable, Mapping


def weight_buckets(
    weights: Mapping[str, Any] | Iterable[tuple[str, Any]], bucket_bytes: int
) -> list[list[tuple[str, Any]]]:
    """Split (name, tensor) pairs, in order, into lists of at most ~bucket_bytes (≥ 1 tensor each)."""
    items = weights.items() if isinstance(weights, Mapping) else weights
    buckets: list[list[tuple[str, Any]]] = [[]]
    size = 0
    for name, tensor in items:
        tensor = tensor.detach().cpu().contiguous()
        nbytes = tensor.numel() * tensor.element_size()
        if buckets[-1] and size + nbytes > bucket_bytes:
            buckets.append([])
            size = 0
        buckets[-1].append((name, tensor))
        size += nbytes
    return buckets if buckets[-1] else []
