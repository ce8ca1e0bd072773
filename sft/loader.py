"""A worker's SFT micro-batches, collated ahead of the training step.

Item k of `StepBatches` is everything optimizer step s = start_step + 1 + k needs on this rank:
the picks at mixture positions [(s-1)·P, s·P) (P = batch_size · grad_accum, all ranks), every
world-th of each micro-batch for this rank, read by index from the datasets and collated (images
decoded and resized, processor run). It is a pure function of (stream, parts, s, rank), so a
resumed run that starts at `start_step` gets exactly the batches the killed run would have had.

`prefetched` runs the collation in `torch.utils.data.DataLoader` worker processes (forked: they
share the memory-mapped tables, the stream and the processor with the training process), at most
workers × prefetch_steps steps ahead, in step order, and a thread of the training process takes
each step off the loader while the previous one trains. The collator's skips happen in those
processes, so each item carries the skips of its own step back to the training loop.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import queue
import shutil
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from medmo_rl.schema import Sample
from sft.collator import SFTBatch, SFTCollator
from sft.mixture import MixtureStream


@dataclass(frozen=True)
class StepData:
    step: int  # 1-based optimizer step
    batches: list[SFTBatch]  # this rank's grad_accum micro-batches
    skip_counts: dict[str, int]  # records the collator skipped in this step, by reason
    skipped_ids: dict[str, str]  # record id → reason, for ids skipped for the first time in this process


def step_picks(stream: MixtureStream, step: int, batch_size: int, grad_accum: int, rank: int,
               world: int) -> list[list[tuple[int, int]]]:
    """(dataset, record) picks of this rank's micro-batches of optimizer step `step` (1-based)."""
    per_step = batch_size * grad_accum
    picks = stream.take((step - 1) * per_step, step * per_step)
    return [picks[m * batch_size + rank:(m + 1) * batch_size:world] for m in range(grad_accum)]


class StepBatches(torch.utils.data.Dataset):
    """Map-style dataset: item k = StepData of optimizer step start_step + 1 + k."""

    def __init__(self, stream: MixtureStream, parts: Sequence[Sequence[Sample]], collator: SFTCollator, *,
                 batch_size: int, grad_accum: int, rank: int, world: int, start_step: int, total_steps: int):
        self.stream, self.parts, self.collator = stream, parts, collator
        self.batch_size, self.grad_accum, self.rank, self.world = batch_size, grad_accum, rank, world
        self.start_step, self.total_steps = start_step, total_steps

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)

    def __getitem__(self, k: int) -> StepData:
        step = self.start_step + 1 + k
        counts, seen = Counter(self.collator.skip_counts), set(self.collator.skipped_ids)
        batches = [self.collator([self.parts[d][i] for d, i in micro])
                   for micro in step_picks(self.stream, step, self.batch_size, self.grad_accum, self.rank, self.world)]
        return StepData(step, batches, dict(self.collator.skip_counts - counts),
                        {rid: why for rid, why in self.collator.skipped_ids.items() if rid not in seen})


def prefetched(steps: StepBatches, *, workers: int, prefetch_steps: int) -> Iterator[StepData]:
    """steps[0], steps[1], ... in order; with workers > 0 collated ahead in that many processes."""
    if workers == 0:
        yield from (steps[k] for k in range(len(steps)))
        return
    parent = Path(_SHM if os.access(_SHM, os.W_OK) else tempfile.gettempdir())
    _remove_stale(parent)
    folder = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=parent))
    try:
        loader = torch.utils.data.DataLoader(steps, batch_size=None, shuffle=False, num_workers=workers,
                                             prefetch_factor=prefetch_steps, collate_fn=partial(_park, folder))
        yield from _read_ahead(_unpark(Path(path)) for path in loader)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


_END = object()


def _read_ahead(items: Iterator[StepData], depth: int = 2) -> Iterator[StepData]:
    """`items`, taken from the DataLoader and un-parked by a thread of this process up to `depth`
    steps ahead: the hand-off (a wake-up, a file read, an unpickle: 1–3 ms a step on a busy 2-core
    host, 2–4 % of the tiny step) then overlaps the previous step's compute, which releases the GIL."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(x) -> bool:
        while not stop.is_set():
            try:
                ready.put(x, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in items:
                if not put(item):
                    break
            else:
                put(_END)
        except BaseException as exc:  # raised in the training loop's thread, where it belongs
            put(exc)
        finally:
            items.close()  # here: only the thread that iterates a generator may close it

    reader = threading.Thread(target=run, name="sft-read-ahead", daemon=True)
    reader.start()
    try:
        while (item := ready.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join(timeout=60)


# How a collated step reaches the training process. Left to the DataLoader, every tensor travels as
# a shared-memory file whose descriptor the training process fetches from the loader process in a
# round trip of its own (8 ms a step for 6 small tensors on a busy 2-core host); pickled through
# the result queue, a 700 KB step goes in 64 KB pipe-sized pieces, each a wake-up of both processes
# (5 ms). Here the loader process writes the step, tensors as numpy arrays, to one file in memory
# (/dev/shm) and sends its path; the training process reads and deletes it (< 1 ms).
_SHM, _PREFIX = "/dev/shm", "medmo-steps-"
STALE_S = 600  # a hand-off folder untouched this long whose process is gone is a killed run's: removed


def _remove_stale(parent: Path) -> None:
    """Folders of training processes killed without cleaning up (SIGKILL: Ray ending a stage's workers)."""
    for folder in parent.glob(f"{_PREFIX}*"):
        try:
            pid = int(folder.name.removeprefix(_PREFIX).split("-")[0])
            if time.time() - folder.stat().st_mtime < STALE_S:
                continue
            os.kill(pid, 0)  # raises when there is no such process
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, OSError):  # not ours, gone already, or another user's live process
            continue


def _park(folder: Path, item: StepData) -> str:
    path = folder / f"step{item.step:09d}.pkl"
    numpy_item = dataclasses.replace(item, batches=[_map_arrays(b, torch.Tensor.numpy) for b in item.batches])
    path.write_bytes(pickle.dumps(numpy_item, protocol=pickle.HIGHEST_PROTOCOL))
    return str(path)


def _unpark(path: Path) -> StepData:
    item = pickle.loads(path.read_bytes())  # protocol 5: the arrays come back writable, as from_numpy wants
    path.unlink()
    return dataclasses.replace(item, batches=[_map_arrays(b, torch.from_numpy) for b in item.batches])


def _map_arrays(batch: SFTBatch, fn) -> SFTBatch:
    return dataclasses.replace(batch, **{f.name: fn(v) for f in dataclasses.fields(batch)
                                         if isinstance(v := getattr(batch, f.name), (torch.Tensor, np.ndarray))})
