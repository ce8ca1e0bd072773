"""RL-loop phases that need no engine: scoring failures, dynamic sampling, advantages."""
import dataclasses
import math

import pytest

from medmo_rl.config import load_config
from medmo_rl.learner import LearnStats
from medmo_rl.records import Completion, Group
from medmo_rl.driver.rl_loop import (ScoredGroup, StepBatch, SyncTiming, collect_phase, part_mean, prompts_per_step,
                                     step_metrics, to_train_items)
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
    m = step_metrics(batch, None, [], 0.0, SyncTiming(), 1.0, 0, PromptSampler([_sample(0)], 0))
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
    m = step_metrics(StepBatch(), stats, [], 0.0, SyncTiming(), 1.0, 1, PromptSampler([_sample(0)], 0))
    learn = {k: v for k, v in m.items() if k.startswith("learn/")}
    assert learn == {f"learn/{f.name}": getattr(stats, f.name) for f in dataclasses.fields(LearnStats)}
    assert {"learn/clip_low", "learn/ratio", "learn/engine_logprob_mismatch", "learn/lr"} <= learn.keys()
