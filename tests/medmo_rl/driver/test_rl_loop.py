"""RL-loop phases that need no engine: scoring failures, dynamic sampling, advantages."""
import math

import pytest

from medmo_rl.config import load_config
from medmo_rl.records import Completion, Group
from medmo_rl.driver.rl_loop import ScoredGroup, collect_phase, prompts_per_step, to_train_items
from medmo_rl.sampler import PromptSampler
from medmo_rl.schema import Sample
from rewards.client import RewardClient


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
