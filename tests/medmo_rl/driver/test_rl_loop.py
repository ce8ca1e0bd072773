"""RL-loop phases that need no engine: scoring failures, dynamic sampling, advantages."""
import dataclasses
import math
import time

import pytest

from medmo_rl.config import load_config
from medmo_rl.learner import LearnStats
from medmo_rl.records import Completion, Group
from medmo_rl.driver.rl_loop import (LoopTiming, Rollouts, StopOnSigterm, ScoredGroup, StepBatch, SyncTiming, collect_phase, overlap_s, part_mean,
                                     prompts_per_step, step_metrics, to_train_items)
from medmo_rl.sampler import PromptSampler
from medmo_rl.schema import Sample
from rewards.client import RewardClient
from rewards.composite import score_items


def _sample(i):
    return Sample(id=f"s{i}", task="grounding", prompt="Locate the lesion.", answer="nodule <box>[[0, 0, 500, 500]]</box>",
                  images=("x.png",), boxes=((0.0, 0.0, 32.0, 32.0),), labels=("nodule",), image_size=(64, 64))


class RecordedPool:
    """Replays fixed completions (the pool's output type, not its behaviour) so the loop's own
    logic can be exercised against a REAL reward client."""

    num_workers = 1
    restarts = 0

    def __init__(self, texts):
        self.texts, self.calls = texts, []

    def generate(self, samples, sampling, answer_format):
        self.calls.append([s.id for s in samples])
        return [Group(s, (1, 2), tuple(Completion(s.id, k, t, (5,) * (k + 1), (-0.1,) * (k + 1), "stop", 0)
                                       for k, t in enumerate(self.texts))) for s in samples]


def test_reward_outage_stops_past_the_failed_fraction():
    cfg = load_config(None, ["rl.num_generations=2", "rl.prompts_per_step=2"])
    client = RewardClient("http://127.0.0.1:9", connect_timeout_s=0.2, retries=1, backoff_s=0.01)  # nothing listens
    with pytest.raises(RuntimeError, match="could not be scored.*127.0.0.1:9"):
        collect_phase(cfg, PromptSampler([_sample(i) for i in range(4)], 0), RecordedPool(["a", "b"]), client)
    assert client.failed_items == 4


def test_failed_scores_are_nan_counted_and_filtered_when_tolerated():
    cfg = load_config(None, ["rl.num_generations=2", "rl.prompts_per_step=2", "reward.max_failed_fraction=1.0",
                             "rl.max_extra_rounds=1"])
    client = RewardClient("http://127.0.0.1:9", connect_timeout_s=0.2, retries=0)
    pool = RecordedPool(["a", "b"])
    batch = collect_phase(cfg, PromptSampler([_sample(i) for i in range(6)], 0), pool, client)
    assert batch.failed_scores == 8 and batch.groups == []  # all-NaN groups carry no signal
    assert batch.zero_std_groups == 4 and len(pool.calls) == 2  # one extra round tried to refill
    assert batch.drawn_ids == [i for call in pool.calls for i in call]


def test_nan_rewards_get_zero_advantage_and_truncation_mask():
    cfg = load_config(None, ["rl.num_generations=3", "rl.mask_truncated=true"])
    s = _sample(0)
    comps = tuple(Completion("s0", k, "t", (1, 2), (-0.1, -0.2), "length" if k == 2 else "stop", 0) for k in range(3))
    items = to_train_items(cfg, [ScoredGroup(Group(s, (1,), comps), (1.0, math.nan, 0.0), ({}, {}, {}))])
    # finite rewards [1, 0]: mean 0.5, unbiased std 0.7071 → ±0.7071
    assert [round(i.advantage, 4) for i in items] == [0.7071, 0.0, -0.7071]
    assert [i.loss_mask for i in items] == [True, True, False]


def test_prompts_per_step_from_the_paper_batch():
    c = load_config("configs/medmo_8b.yaml")
    # 2 completions x 4 accumulation x 48 learners = 384 completions = 48 prompts of G = 8
    assert prompts_per_step(c) == 48


GOOD = "<think>r</think><answer>nodule <box>[[0, 0, 500, 500]]</box></answer>"  # the GT box: bbox 1.0
OFF = "<think>r</think><answer>nodule <box>[[500, 500, 900, 900]]</box></answer>"  # bbox 0.33


class InProcessScorer:
    """What the reward service computes (rewards.composite.score_items), without the HTTP hop."""

    def __init__(self, cfg):
        self.cfg, self.scored = cfg, []

    def score(self, items):
        self.scored += [it.reference.id for it in items]
        return score_items(items, self.cfg.reward)


class PromptLengthPool(RecordedPool):
    """Serves sample i with a prompt of `lengths[i]` engine tokens."""

    def __init__(self, texts, lengths):
        super().__init__(texts)
        self.lengths = lengths

    def generate(self, samples, sampling, answer_format):
        return [dataclasses.replace(g, prompt_token_ids=(1,) * self.lengths[int(g.sample.id[1:])])
                for g in super().generate(samples, sampling, answer_format)]


def test_prompts_longer_than_max_prompt_tokens_are_rejected_before_scoring():
    cfg = load_config(None, ["rl.num_generations=2", "rl.prompts_per_step=2", "rl.max_prompt_tokens=10",
                             "rl.max_extra_rounds=1"])
    pool = PromptLengthPool([GOOD, OFF], lengths=[10, 11, 4, 30, 5, 6])
    scorer = InProcessScorer(cfg)
    batch = collect_phase(cfg, PromptSampler([_sample(i) for i in range(6)], 0), pool, scorer)
    drawn = [i for call in pool.calls for i in call]
    too_long = [i for i in drawn if pool.lengths[int(i[1:])] > 10]
    assert too_long and batch.rejected_ids == too_long  # s1 (11 tokens) or s3 (30), as drawn; 10 is allowed
    assert not set(too_long) & set(scorer.scored) and not set(too_long) & {g.group.sample.id for g in batch.groups}
    assert len(batch.groups) == 2 and len(pool.calls) == 2 and batch.failed_requests == 0  # the extra round refilled
    m = step_metrics(batch, None, [], LoopTiming(step_s=1.0), SyncTiming(), 0, RecordedPool([]))
    assert m["rollout/rejected_long_prompts"] == len(too_long) and m["rollout/rejected_ids"] == too_long


def test_bbox_reward_is_averaged_over_grounding_items_only():
    batch = StepBatch(all_parts=[{"accuracy": 1.0, "bbox": 0.8}, {"accuracy": 0.0, "bbox": 0.0},
                                 {"accuracy": 0.5, "bbox": 0.4}],
                      all_tasks=["grounding", "vqa", "grounding"])
    assert part_mean(batch, "bbox") == pytest.approx(0.6)  # (0.8 + 0.4) / 2: the vqa 0.0 is no miss
    assert part_mean(batch, "accuracy") == pytest.approx(0.5)  # every task has an accuracy
    assert math.isnan(part_mean(StepBatch(all_parts=[{"bbox": 0.0}], all_tasks=["caption"]), "bbox"))


def test_learn_metrics_carry_the_record_field_names():
    stats = LearnStats(*[float(i) for i in range(len(dataclasses.fields(LearnStats)))])
    m = step_metrics(StepBatch(), stats, [], LoopTiming(step_s=1.0), SyncTiming(), 1, RecordedPool([]))
    learn = {k: v for k, v in m.items() if k.startswith("learn/")}
    assert learn == {f"learn/{f.name}": getattr(stats, f.name) for f in dataclasses.fields(LearnStats)}
    assert {"learn/clip_low", "learn/ratio", "learn/engine_logprob_mismatch", "learn/lr"} <= learn.keys()


def test_train_items_carry_staleness_and_the_bound_is_enforced():
    cfg = load_config(None, ["rl.num_generations=2", "rl.max_staleness=1"])
    s = _sample(0)
    comps = tuple(Completion("s0", k, "t", (1,), (-0.1,), "stop", weight_version=3) for k in range(2))
    sg = ScoredGroup(Group(s, (1,), comps), (1.0, 0.0), ({}, {}))
    assert [it.staleness for it in to_train_items(cfg, [sg], version=4)] == [1, 1]
    assert [it.staleness for it in to_train_items(cfg, [sg], version=3)] == [0, 0]
    with pytest.raises(RuntimeError, match="2 weight versions behind.*max_staleness=1"):
        to_train_items(cfg, [sg], version=5)


def test_overlap_of_a_span_with_intervals():
    assert overlap_s((1.0, 4.0), [(0.0, 2.0), (3.5, 9.0), (5.0, 6.0)]) == pytest.approx(1.0 + 0.5)
    assert overlap_s((1.0, 2.0), []) == 0.0


class _Sim:
    """The loop's use of `Rollouts` with sleeps for phases: collect reads the pool's weight version,
    sync bumps it. Records what the schedule must guarantee."""

    def __init__(self, collect_s, learn_s, k, steps, start=0):
        self.collect_s, self.learn_s, self.k, self.steps = collect_s, learn_s, k, steps
        self.version = start  # every step learns: version == steps done
        self.pool_busy = False
        self.collected: list[int] = []  # versions the batches were generated with
        self.staleness: list[int] = []
        self.ahead: list[int] = []  # batches collected but not yet trained, seen at each step start
        self.learn_spans: list[tuple[float, float]] = []
        self.intervals: list[tuple[float, float]] = []  # the collects', as Rollouts recorded them
        self.start = start

    def collect(self):
        assert not self.pool_busy
        self.pool_busy = True
        v = self.version
        time.sleep(self.collect_s)
        self.pool_busy = False
        self.collected.append(v)
        return StepBatch(drawn_ids=[f"v{v}"], generated_groups=v)

    def run(self):
        r = Rollouts(self.collect, self.k, start=self.start, end=self.steps)
        try:
            for step in range(self.start, self.steps):
                b = r.next()
                self.ahead.append(len(self.collected) - (step - self.start) - 1)
                self.staleness.append(self.version - b.generated_groups)
                t0 = time.perf_counter()
                time.sleep(self.learn_s)
                self.learn_spans.append((t0, time.perf_counter()))
                r.wait_collected(step)
                assert not self.pool_busy  # sync never meets a collect
                self.version += 1
                r.step_done(step + 1)
        finally:
            r.close()
        self.intervals = r.intervals


@pytest.mark.parametrize("k", [1, 2])
def test_rollouts_bound_staleness_under_a_slow_learner(k):
    sim = _Sim(collect_s=0.01, learn_s=0.08, k=k, steps=8)
    sim.run()
    assert len(sim.collected) == 8  # one collect per step, none extra past the end
    assert max(sim.staleness) == k  # the rollout does run ahead …
    assert all(0 <= s <= k for s in sim.staleness)  # … but never further than the bound
    assert max(sim.ahead) <= k


def test_rollouts_with_zero_staleness_are_strictly_on_policy_and_sequential():
    sim = _Sim(collect_s=0.01, learn_s=0.01, k=0, steps=5)
    sim.run()
    assert sim.staleness == [0] * 5 and sim.ahead == [0] * 5
    assert sim.collected == [0, 1, 2, 3, 4]  # each batch collected with the weights of the step before


def test_rollouts_overlap_collecting_with_learning_only_when_allowed():
    """collect 0.1 s and learn 0.1 s per step: with k = 1 the next collect runs during each learn
    but the first (≈ 0.5 s of 0.6 s); with k = 0 never."""
    for k in (0, 1):
        sim = _Sim(collect_s=0.1, learn_s=0.1, k=k, steps=6)
        sim.run()
        together = sum(overlap_s(span, sim.intervals) for span in sim.learn_spans)
        assert together == 0.0 if k == 0 else together > 0.25, (k, together)


def test_rollouts_resume_mid_run_and_raise_collect_errors():
    sim = _Sim(collect_s=0.0, learn_s=0.01, k=1, steps=6, start=3)
    sim.run()
    assert len(sim.collected) == 3 and max(sim.staleness) <= 1

    def broken():
        raise ValueError("reward service gone")

    r = Rollouts(broken, 1, start=0, end=3)
    with pytest.raises(RuntimeError, match="waited for the rollout batch of step 1") as e:
        r.next()
    assert isinstance(e.value.__cause__, ValueError)
    r.close()


def test_sigterm_is_turned_into_a_request_and_the_handler_restored():
    import os
    import signal

    before = signal.getsignal(signal.SIGTERM)
    with StopOnSigterm() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)  # would end the test process without the handler
        time.sleep(0.05)
        assert stop.requested
    assert signal.getsignal(signal.SIGTERM) is before
