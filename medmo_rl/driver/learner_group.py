"""N learner ranks as Ray actors, joined by torch.distributed — placed independently of rollout.

The driver hands the whole rollout batch to `LearnerGroup.train_step`; the group cuts it into
`rl.mini_batches` global mini-batches, shards each over the ranks, pads shards so every rank runs
the same number of micro-batches (masked copies: they add no gradient), and passes each rank the
GLOBAL token count per mini-batch so the token-level loss is normalised over the whole batch. The
ranks reduce their statistics among themselves (one all-gather), so every rank returns the same
`LearnStats` and the group hands rank 0's on.

A rank that dies (kill -9, OOM, a lost node) raises `LearnerLost` from whichever call was waiting
on it — at once, not when the surviving ranks' collective times out (under DDP they would wait in
the all-reduce forever). So does a call that outlasts `rl.learner_timeout_s`. The driver then
shuts the group down and builds a new one from the last RL checkpoint (driver/pipeline.py).
"""
from __future__ import annotations

import dataclasses
import math
import time
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


class LearnerLost(RuntimeError):
    """A learner rank died or hung; the group is unusable (its ranks share one process group)."""


def wait_all(refs: list, *, names: list[str], what: str, timeout_s: float, grace_s: float = 30.0) -> list:
    """`ray.get(refs)` that fails as soon as ANY of them fails: a dead actor's ref raises at once
    even while the others still wait on it (in a collective), and the whole wait is bounded.

    A rank whose collective broke because a peer died (gloo: "Connection reset by peer") often
    answers before Ray has marked the peer dead; its error waits up to `grace_s` for the others,
    and becomes LearnerLost naming the dead peer if there is one (else it is raised as it is)."""
    deadline = time.monotonic() + timeout_s
    pending = list(refs)
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            late = [names[refs.index(r)] for r in pending]
            raise LearnerLost(f"{what}: {', '.join(late)} did not answer within rl.learner_timeout_s={timeout_s:g}")
        done, pending = ray.wait(pending, num_returns=1, timeout=min(left, 5.0))
        for ref in done:
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                raise LearnerLost(f"{what}: {names[refs.index(ref)]} died ({type(exc).__name__})") from exc
            except ray.exceptions.RayTaskError as exc:
                dead = _dead_peer([r for r in done if r is not ref] + list(pending), refs, names, grace_s)
                if dead is None:
                    raise
                raise LearnerLost(f"{what}: {dead[0]} died ({type(dead[1]).__name__})") from exc
    return ray.get(refs)


def _dead_peer(pending: list, refs: list, names: list[str], grace_s: float):
    """(name, error) of the first ref among `pending` that resolves to a dead actor within grace_s."""
    deadline = time.monotonic() + grace_s
    while pending and time.monotonic() < deadline:
        done, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
        for ref in done:
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                return names[refs.index(ref)], exc
            except ray.exceptions.RayTaskError:
                continue
    return None


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
        addr, port = self._get([self.actors[0].free_address.remote()], "starting the learners")[0]
        self._get([a.init_distributed.remote(addr, port) for a in self.actors], "joining the learners' process group")

    def _get(self, refs: list, what: str, ranks: list | None = None) -> list:
        ranks = self.actors if ranks is None else ranks
        return wait_all(refs, names=[f"learner rank {self.actors.index(a)}" for a in ranks], what=what,
                        timeout_s=self.rl.learner_timeout_s)

    def train_step(self, items: Sequence[TrainItem]) -> LearnStats:
        shards, tokens = shard_batch(items, mini_batches=self.rl.mini_batches, world_size=len(self.actors),
                                     micro_batch=self.rl.batch_size)
        return self._get([a.train_step.remote(s, tokens) for a, s in zip(self.actors, shards)], "a learner step")[0]

    def _ranks_for_state(self) -> list:
        """Who must take part in weights / probe / save / load: all ranks under FSDP2 (each holds a
        shard), rank 0 alone under DDP (every rank holds the same full model)."""
        return self.actors if self.rl.use_gpu and len(self.actors) > 1 else self.actors[:1]

    def export_weights(self, probe: Any, bucket_bytes: int = 256 * 2**20) -> tuple[list[Any], list[float]]:
        """Rank 0's policy as object-store buckets + its probe log-probs."""
        ranks = self._ranks_for_state()
        return self._get([a.export_weights.remote(probe, bucket_bytes) for a in ranks], "exporting weights", ranks)[0]

    def save(self, path: str) -> None:
        ranks = self._ranks_for_state()
        self._get([a.save.remote(path) for a in ranks], f"saving {path}", ranks)

    def load(self, path: str) -> None:
        self._get([a.load.remote(path) for a in self.actors], f"loading {path}")

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a)
        self.actors = []
