"""Fixtures of the rollout tests: the tiny engine's config and samples (a learner: tests/conftest.py)."""
from __future__ import annotations

import pytest

from medmo_rl.config import RolloutConfig


@pytest.fixture(scope="session")
def rollout_config() -> RolloutConfig:
    # kv_cache_gib is overridden by the session's VLLM_CPU_KVCACHE_SPACE=1 (tests/conftest.py).
    return RolloutConfig(num_workers=1, cpus_per_worker=1.0, max_model_len=1024, max_num_seqs=64, max_pixels=64 * 64)


@pytest.fixture(scope="session")
def image_samples(synthetic_dir) -> list:
    """Image samples of every image task (vqa, caption, grounding, report), interleaved."""
    from medmo_rl.schema import load_samples

    samples = [s for s in load_samples(synthetic_dir["all"]).samples if s.images]
    assert len(samples) >= 48
    return samples
