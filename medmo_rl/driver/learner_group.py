"""N learner ranks as Ray actors, joined by torch.distributed — placed independently of rollout.

The driver hands the whole rollout batch to `LearnerGroup.train_step`; the group cuts it into
`rl.mini_batches` global mini-batches, shards each over the ranks, pads shards so every rank runs
the same number of micro-batches (masked copies: they add no gradient), and passes each rank the
GLOBAL token count per mini-batch so the token-level loss is normalised over the whole batch. The
ranks reduce their statistics among themselves (one all-gather), so every rank returns the same
`LearnStats` and the group hands rank 0's on.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import ray

from medmo_rl.config import RLConfig
from medmo_rl.learner import Learner, LearnStats, split_even
from medmo_rl.records import TrainItem
from medmo_rl.weights import weight_buckets


def shard_batch(items: Sequence[TrainItem], *, mini_batches: int, world_size: int, micro_batch: int
                ) -> tuple[list[list[list[TrainItem]]], list[int]]:
    """→ (shards[rank][mini_batch] = items, global unmasked tokens per mini-batch)."""
    shards: list[list[list[TrainItem]]] = [[] for _ in range(world_size)]
    tokens: list[int] = []
    for mb in split_even(list(items), mini_batches):
        tokens.append(sum(len(it.completion_token_ids) for it in mb if it.loss_mask))
        pieces = split_even(mb, world_size)
        # same number of micro-batches on every rank, or DDP's all-reduce waits forever
        n_micro = max(1, max(math.ceil(len(p) / micro_batch) for p in pieces))
        filler = dataclasses.replace(mb[0], loss_mask=False) if mb else None
        for rank, piece in enumerate(pieces):
            piece = list(piece)
            while math.ceil(len(piece) / micro_batch) < n_micro and filler is not None:
                piece.append(filler)
            shards[rank].append(piece)
    return shards, tokens


class _LearnerActor(Learner):
    """A Learner as a Ray actor: it names the rendezvous address and puts its weights into the
    object store itself."""

    def free_address(self) -> tuple[str, int]:
        """This node's IP (not 127.0.0.1: ranks on other nodes must reach it) and a free port."""
        import socket

        ip = ray.util.get_node_ip_address()
        with socket.socket() as s:
            s.bind((ip, 0))
            return ip, s.getsockname()[1]

    def export_weights(self, probe: Any, bucket_bytes: int) -> tuple[list[Any], list[float]] | None:
        """→ (object refs of the weight buckets, the probe log-probs of those weights) on rank 0.

        Putting from here (not the driver) saves a copy and a deserialisation per push: the refs
        go to the rollout actors, which fetch the buckets straight from the object store.
        """
        weights = self.weights()  # collective under FSDP2, like the probe's forward
        expected = self.probe_logprobs(probe)
        if self.rank != 0:
            return None
        return [ray.put(bucket) for bucket in weight_buckets(weights, bucket_bytes)], expected


class LearnerGroup:
    def __init__(self, model_dir: str, rl: RLConfig, *, total_steps: int, max_pixels: int, seed: int, dtype: str):
        self.rl = rl
        n = rl.num_learners
        actor = ray.remote(num_cpus=rl.cpus_per_learner, num_gpus=1 if rl.use_gpu else 0)(_LearnerActor)
        threads = max(1, int(rl.cpus_per_learner))
        self.actors = [actor.remote(model_dir, rl, total_steps=total_steps, max_pixels=max_pixels, rank=r,
                                    world_size=n, seed=seed, num_threads=threads, dtype=dtype) for r in range(n)]
        addr, port = ray.get(self.actors[0].free_address.remote())
        ray.get([a.init_distributed.remote(addr, port) for a in self.actors])

    def train_step(self, items: Sequence[TrainItem]) -> LearnStats:
        shards, tokens = shard_batch(items, mini_batches=self.rl.mini_batches, world_size=len(self.actors),
                                     micro_batch=self.rl.batch_size)
        return ray.get([a.train_step.remote(s, tokens) for a, s in zip(self.actors, shards)])[0]

    def _ranks_for_state(self) -> list:
        """Who must take part in weights / probe / save / load: all ranks under FSDP2 (each holds a
        shard), rank 0 alone under DDP (every rank holds the same full model)."""
        return self.actors if self.rl.use_gpu and len(self.actors) > 1 else self.actors[:1]

    def export_weights(self, probe: Any, bucket_bytes: int = 256 * 2**20) -> tuple[list[Any], list[float]]:
        """Rank 0's policy as object-store buckets + its probe log-probs."""
        return ray.get([a.export_weights.remote(probe, bucket_bytes) for a in self._ranks_for_state()])[0]

    def save(self, path: str) -> None:
        ray.get([a.save.remote(path) for a in self._ranks_for_state()])

    def load(self, path: str) -> None:
        ray.get([a.load.remote(path) for a in self.actors])

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a)
        self.actors = []
