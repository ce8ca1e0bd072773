"""rewards.verl: verl's custom reward function, against its documented signature and, where verl is
importable, through verl's own loader (verl.trainer.ppo.reward.get_custom_reward_fn)."""
import importlib.util
import inspect
from pathlib import Path

import numpy as np
import pytest
from reward_testlib import GROUNDING, MCQ, VQA_YES

from medmo_rl.config import RewardConfig
from rewards import score
from rewards.labels import encode_label
from rewards.verl import compute_score

ROOT = Path(__file__).resolve().parents[2]
ANSWER = "<think>\nx\n</think>\n<answer>\nnodule <box>[[100, 100, 500, 300]]</box>\n</answer>"
NO_OVERLONG = RewardConfig(w_overlong=0.0)


def test_signature_is_the_documented_one():
    params = inspect.signature(compute_score).parameters
    assert list(params)[:4] == ["data_source", "solution_str", "ground_truth", "extra_info"]
    assert params["extra_info"].default is None
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


@pytest.mark.parametrize("ref, answer", [(GROUNDING, ANSWER), (MCQ, "<answer>B</answer>"), (VQA_YES, "no")])
def test_score_and_parts_equal_rewards_score(ref, answer):
    # as verl's NaiveRewardManager calls it: keywords only, extra_info with verl's own additions
    got = compute_score(data_source="medmo", solution_str=answer, ground_truth=encode_label(ref),
                        extra_info={"num_turns": None, "rollout_reward_scores": {}}, reward_router_address=None)
    want = score(answer, ref, num_tokens=0, config=NO_OVERLONG)
    assert got == {"score": want["total"], "accuracy": want["parts"]["accuracy"], "bbox": want["parts"]["bbox"],
                   "tag_count": want["parts"]["tag_count"], "invalid_label": 0.0}


def test_a_parquet_dict_ground_truth_with_numpy_arrays():
    row = {k: (np.array(v) if isinstance(v, list) else v) for k, v in GROUNDING.to_json().items()}
    assert compute_score("medmo", ANSWER, row) == compute_score("medmo", ANSWER, encode_label(GROUNDING))


def test_invalid_ground_truth_scores_zero_with_the_same_keys():
    good = compute_score("medmo", "yes", encode_label(VQA_YES))
    bad = compute_score("medmo", "yes", '{"task": "vqa"}')
    assert bad == {"score": 0.0, "accuracy": 0.0, "bbox": 0.0, "tag_count": 0.0, "invalid_label": 1.0}
    assert set(bad) == set(good) and good["score"] == 1.0


def test_recipe_weights(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("reward:\n  w_bbox: 3.0\n  w_tag_count: 0.0\n")
    got = compute_score("medmo", ANSWER, encode_label(GROUNDING), recipe=str(recipe))
    assert got["score"] == pytest.approx(got["accuracy"] + 3.0 * got["bbox"])


@pytest.mark.skipif(importlib.util.find_spec("verl") is None,
                    reason="verl is not a project dependency (its pins clash with transformers 5.19); "
                           "docs/rewards.md records the run through verl's loader in a scratch venv")
def test_through_verls_own_loader(tmp_path):
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    recipe = tmp_path / "r.yaml"
    recipe.write_text("reward:\n  w_tag_count: 0.0\n")
    section = {"path": str(ROOT / "rewards" / "verl.py"), "name": "compute_score",
               "reward_kwargs": {"recipe": str(recipe)}}
    # verl 0.9 reads reward.custom_reward_function, earlier releases the top-level key
    fn = get_custom_reward_fn(OmegaConf.create({"reward": {"custom_reward_function": section},
                                                "custom_reward_function": section}))
    got = fn(data_source="medmo", solution_str=ANSWER, ground_truth=encode_label(GROUNDING), extra_info={})
    assert got == compute_score("medmo", ANSWER, encode_label(GROUNDING), recipe=str(recipe))
    assert got["score"] == pytest.approx(got["accuracy"] + got["bbox"]) and got["tag_count"] == 1.0
