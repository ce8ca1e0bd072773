"""Fixtures of the rollout tests: the tiny engine's config, samples, a learner."""
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


@pytest.fixture(scope="session")
def make_learner(tiny_model_dir):
    """make_learner(seed) → the tiny model in transformers; seed > 0 perturbs every weight."""
    import torch
    from transformers import AutoModelForImageTextToText

    def make(seed: int = 0):
        model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
        if seed:
            gen = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.05 * torch.randn(p.shape, generator=gen))
        return model

    return make


@pytest.fixture(scope="session")
def processor(tiny_model_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_dir)
