"""The Ray-facing side of one rollout worker: a thin wrapper, made remote in rollout/pool.py.

It adds only what crosses the process boundary: weights arrive as object-store refs of buckets
(put once by the pool, shared by every actor) and are streamed into the engine bucket by bucket.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from medmo_rl.config import RolloutConfig
from medmo_rl.records import Group, SamplingSpec
from medmo_rl.schema import Sample
from rollout.worker import RolloutWorker, WeightUpdate, WorkerHealth


def actor_env(config: RolloutConfig) -> dict[str, str]:
    """Environment of a rollout actor's own process (Ray runtime_env), set before vLLM/torch load.

    In-process engine: ~1 GB less than multi-process on CPU and no /dev/shm queues. OpenMP: an
    in-process CPU engine never binds threads (only vLLM's multi-process executor reads
    VLLM_CPU_OMP_THREADS_BIND), so the thread count is what keeps two engines on two cores from
    oversubscribing: one OpenMP thread per reserved CPU. "nobind" keeps the same true if someone
    turns multiprocessing back on (its "auto" pins every engine to the same last core).
    """
    threads = max(1, int(config.cpus_per_worker))
    return {
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_CPU_KVCACHE_SPACE": "",  # empty = unset for vLLM: rollout.kv_cache_gib decides, not the driver's env
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "OMP_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
    }


class RolloutActor:
    def __init__(self, model_dir: str, config: RolloutConfig, seed: int = 0):
        self.worker = RolloutWorker(model_dir, config, seed=seed)

    def pid(self) -> int:
        return os.getpid()

    def generate(self, samples: list[Sample], sampling: SamplingSpec, answer_format: str) -> list[Group]:
        return self.worker.generate(samples, sampling, answer_format)

    def update_weights(self, version: int, bucket_refs: list[Any], expected_probe: list[float] | None) -> WeightUpdate:
        return self.worker.update_weights(version, _stream(bucket_refs), expected_probe)

    def health(self) -> WorkerHealth:
        return self.worker.health()

    def shutdown(self) -> None:
        self.worker.shutdown()


def _stream(bucket_refs: list[Any]) -> Iterator[tuple[str, Any]]:
    """(name, tensor) pairs, fetching one bucket at a time from the object store."""
    import ray

    for ref in bucket_refs:
        yield from ray.get(ref)
