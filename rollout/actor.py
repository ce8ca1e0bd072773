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

    In-process engine: ~1 GB less than multi-process on CPU and no /dev/shm queues. Threads: an
    in-process CPU engine never binds OpenMP threads (only vLLM's multi-process executor reads
    VLLM_CPU_OMP_THREADS_BIND), so the thread count is what keeps two engines on two cores from
    oversubscribing: one OpenMP thread per reserved CPU (measured: 2 actors × 1 thread on 2 cores
    work; without OMP_NUM_THREADS vLLM drops an in-process engine to 1 torch thread anyway).
    "nobind" keeps this true if multiprocessing is turned back on (its "auto" binds every engine to
    the same last core and keeps the other for its front-end). Note Ray starts workers at nice 15
    (RAY_worker_niceness), so on a busy node they yield to nice-0 processes.
    """
    threads = max(1, int(config.cpus_per_worker))
    return {
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "OMP_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
        # the actor's output reaches the driver's console: engine start-up INFO (~40 lines per
        # actor and restart) would bury the progress bars; warnings and errors still show
        "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"),
    }


class RolloutActor:
    def __init__(self, model_dir: str, config: RolloutConfig, seed: int = 0):
        # This process's own environment: rollout.kv_cache_gib decides the KV cache, not a
        # VLLM_CPU_KVCACHE_SPACE inherited from the driver (vLLM would let that win).
        os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)
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
