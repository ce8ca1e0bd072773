"""Deterministic, resumable prompt order for the RL stage.

Epoch e visits the dataset in the order of a permutation seeded by (seed, e); the position is
just (epoch, index), so a checkpoint stores two integers and a resumed run draws exactly the ids an
uninterrupted run would have drawn — across epoch boundaries too. Items are read by index and never
copied, so a memory-mapped `arrow_store.ArrowSamples` serves as well as a list.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Sequence, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class SamplerState:
    epoch: int = 0
    index: int = 0  # next position within the epoch's permutation


class PromptSampler(Generic[T]):
    def __init__(self, items: Sequence[T], seed: int, state: SamplerState = SamplerState()):
        if len(items) == 0:
            raise ValueError("PromptSampler needs at least one item")
        self.items, self.seed, self.state = items, seed, state
        self._perm_epoch, self._perm = -1, np.arange(0)

    def _order(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.items))
            self._perm_epoch = epoch
        return self._perm

    def take(self, n: int) -> list[T]:
        out: list[T] = []
        epoch, index = self.state.epoch, self.state.index
        while len(out) < n:
            if index >= len(self.items):
                epoch, index = epoch + 1, 0
            out.append(self.items[int(self._order(epoch)[index])])
            index += 1
        self.state = SamplerState(epoch, index)
        return out

    @property
    def epochs_done(self) -> float:
        return self.state.epoch + self.state.index / len(self.items)
