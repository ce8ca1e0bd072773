"""Shared fixtures. Everything a test writes goes under one test-owned folder (vLLM, Ray and multiprocessing write to /tmp, ~/.cache/vllm, ~/.ray and /dev/shm otherwise)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Set before anything imports vllm/ray/torch: they read these at import or first use.
_ROOT = Path(tempfile.mkdtemp(prefix="medmo-t-", dir="/tmp"))  # short: Ray's socket paths are length-limited
for _k, _v in {
    "TMPDIR": str(_ROOT / "tmp"),
    "VLLM_CACHE_ROOT": str(_ROOT / "vllm-cache"),
    "RAY_AUTH_MODE": "disabled",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "MEDMO_TEST_ROOT": str(_ROOT),
}.items():
    os.environ.setdefault(_k, _v)
(_ROOT / "tmp").mkdir(parents=True, exist_ok=True)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def test_root() -> Path:
    return _ROOT


@pytest.fixture(scope="session")
def tiny_model_dir(test_root) -> Path:
    """The offline tiny Qwen3-VL, built once per test session."""
    from medmo_rl.tiny_model import resolve_model

    return resolve_model("", test_root / "models", seed=0)


@pytest.fixture(scope="session")
def synthetic_dir(test_root) -> dict:
    """A small synthetic dataset (images + JSONL per task)."""
    from medmo_rl.synthetic import generate

    return generate(test_root / "synthetic", 64, seed=0, size=64)


@pytest.fixture(scope="session")
def ray_local(test_root):
    """One real local Ray cluster for the whole session (loopback, own temp dir, auth off)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=8, include_dashboard=False, _temp_dir=str(test_root / "ray"),
                 log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


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
