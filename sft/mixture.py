"""A stage's data mixture as a deterministic stream of (dataset, record) picks.

Position i of the stream picks dataset k with probability w_k / Σw (drawn in fixed blocks from
`default_rng([seed, block])`), and the j-th pick of dataset k is record perm_{k,e}[j mod n_k] with
e = j // n_k and perm_{k,e} = `default_rng([seed, k, e]).permutation(n_k)` — so each dataset is
read without repeats within one of its own epochs and reshuffled for the next.

Everything is a function of (sizes, weights, seed, position): a resumed run asks for
`take(position, ...)` and gets exactly the picks the killed run would have seen. Pure numpy.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

BLOCK = 1 << 16  # picks drawn per RNG block


class MixtureStream:
    def __init__(self, sizes: Sequence[int], weights: Sequence[float], seed: int):
        if len(sizes) != len(weights) or not sizes:
            raise ValueError(f"need one weight per dataset, got {len(sizes)} sizes and {len(weights)} weights")
        if any(n <= 0 for n in sizes):
            raise ValueError(f"every dataset in a mixture needs at least one record, got sizes {list(sizes)}")
        w = np.asarray(weights, dtype=np.float64)
        if not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ValueError(f"mixture weights must be positive numbers, got {list(weights)}")
        self.sizes = [int(n) for n in sizes]
        self.probs = w / w.sum()
        self.seed = int(seed)
        self._counts_at_block: dict[int, np.ndarray] = {0: np.zeros(len(sizes), dtype=np.int64)}
        self._perm_cache: dict[tuple[int, int], np.ndarray] = {}

    def _choices(self, block: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, block])
        return rng.choice(len(self.sizes), size=BLOCK, p=self.probs)

    def _counts_before(self, block: int) -> np.ndarray:
        """How often each dataset was picked in blocks [0, block)."""
        known = max(b for b in self._counts_at_block if b <= block)
        counts = self._counts_at_block[known].copy()
        for b in range(known, block):
            counts += np.bincount(self._choices(b), minlength=len(self.sizes))
            self._counts_at_block[b + 1] = counts.copy()
        return counts

    def _perm(self, k: int, epoch: int) -> np.ndarray:
        key = (k, epoch)
        if key not in self._perm_cache:
            if len(self._perm_cache) > 8:
                self._perm_cache.clear()
            self._perm_cache[key] = np.random.default_rng([self.seed, k, epoch]).permutation(self.sizes[k])
        return self._perm_cache[key]

    def take(self, start: int, stop: int) -> list[tuple[int, int]]:
        """Picks at positions [start, stop) as (dataset index, record index)."""
        out: list[tuple[int, int]] = []
        pos = start
        while pos < stop:
            block = pos // BLOCK
            counts = self._counts_before(block)
            choices = self._choices(block)
            lo, hi = pos - block * BLOCK, min(stop - block * BLOCK, BLOCK)
            counts = counts + np.bincount(choices[:lo], minlength=len(self.sizes))
            for k in choices[lo:hi]:
                k = int(k)
                j = int(counts[k])
                counts[k] += 1
                out.append((k, int(self._perm(k, j // self.sizes[k])[j % self.sizes[k]])))
            pos = block * BLOCK + hi
        return out


def steps_for_epochs(sizes: Sequence[int], epochs: float, examples_per_step: int) -> int:
    """Optimizer steps for `epochs` passes over the mixture, one pass = Σ sizes examples."""
    return max(1, math.ceil(epochs * sum(sizes) / examples_per_step))
