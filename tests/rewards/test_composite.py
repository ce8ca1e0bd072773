import json
import math
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reward_testlib import GROUNDING, MCQ, VQA_YES

import rewards
import medmo_rl.answers
import rewards.composite
from medmo_rl.config import BBoxRewardConfig, RewardConfig
from medmo_rl.schema import Sample, SampleError
from rewards import PARTS, ScoreItem, bbox_reward, score, score_items

FORMATTED = "<think>\nI look.\n</think>\n<answer>\n{}\n</answer>"
# GROUNDING: image 100×200, GT px (10,20,50,60) and (60,60,90,120) → Qwen 0–1000: x·10, y·5
BOTH_BOXES = "nodule <box>[[100, 100, 500, 300], [600, 300, 900, 600]]</box>"


def test_weights_and_parts():
    cfg = RewardConfig(w_accuracy=2.0, w_bbox=7.0, w_tag_count=0.5, w_overlong=3.0,
                       max_completion_tokens=1024, overlong_cache_tokens=512)
    out = score(FORMATTED.format("Yes"), VQA_YES, num_tokens=100, config=cfg)
    assert out == {"total": 2.5, "parts": {"accuracy": 1.0, "bbox": 0.0, "tag_count": 1.0, "overlong": 0.0}}
    # L = 768: overlong = (1024 − 512 − 768)/512 = −0.5 → total 2·1 + 0.5·1 + 3·(−0.5) = 1.0
    out = score(FORMATTED.format("Yes"), VQA_YES, num_tokens=768, config=cfg)
    assert out["parts"]["overlong"] == -0.5 and out["total"] == 1.0
    assert set(out["parts"]) == set(PARTS)


def test_grounding_boxes_compared_in_pixels():
    cfg = RewardConfig()
    out = score(FORMATTED.format(BOTH_BOXES), GROUNDING, num_tokens=50, config=cfg)
    assert out == {"total": 3.0, "parts": {"accuracy": 1.0, "bbox": 1.0, "tag_count": 1.0, "overlong": 0.0}}
    one = score(FORMATTED.format("nodule <box>[[100, 100, 500, 300]]</box>"), GROUNDING, num_tokens=50, config=cfg)
    assert one["parts"]["bbox"] == 0.5  # one of two GT boxes matched perfectly
    # an off box: the part equals bbox_reward on the pixel boxes with the image size (100, 200)
    off = score("<answer>nodule <box>[[0, 0, 400, 400]]</box></answer>", GROUNDING, num_tokens=50, config=cfg)
    want = bbox_reward([[0, 0, 40, 80]], [list(b) for b in GROUNDING.boxes], image_size=(100, 200))
    assert off["parts"]["bbox"] == want and 0.0 < want < 0.5


def test_bbox_config_is_applied():
    cfg = RewardConfig(bbox=BBoxRewardConfig(lambda_fn=0.2, square=True))
    one = score("<answer>nodule <box>[[100, 100, 500, 300]]</box></answer>", GROUNDING, num_tokens=5, config=cfg)
    assert one["parts"]["bbox"] == pytest.approx((0.5 - 0.2 * 1 / 2) ** 2)  # (base − pen)² = 0.16


def test_dict_reference_equals_sample():
    cfg = RewardConfig()
    for ref in (GROUNDING, MCQ, VQA_YES):
        c = FORMATTED.format(BOTH_BOXES if ref is GROUNDING else "B")
        assert score(c, ref.to_json(), num_tokens=9, config=cfg) == score(c, ref, num_tokens=9, config=cfg)


def test_completion_is_parsed_once(monkeypatch):
    calls = []
    real = rewards.composite.parse_completion
    monkeypatch.setattr(rewards.composite, "parse_completion", lambda c: calls.append(c) or real(c))
    monkeypatch.setattr(medmo_rl.answers, "parse_completion", lambda c: pytest.fail("parsed twice"))
    items = [ScoreItem(FORMATTED.format(BOTH_BOXES), 10, GROUNDING), ScoreItem("yes", 10, VQA_YES)]
    results = score_items(items, RewardConfig())
    assert len(calls) == 2 and [r.total for r in results] == [3.0, 1.0]


def test_one_bad_item_does_not_fail_the_batch():
    no_size = Sample(id="x", task="grounding", prompt="p", answer="", boxes=((1, 1, 2, 2),), labels=("a",))
    results = score_items([ScoreItem("yes", 3, VQA_YES), ScoreItem("a <box>[[1,1,2,2]]</box>", 3, no_size),
                           ScoreItem("no", 3, VQA_YES)], RewardConfig())
    assert [r.total for r in results[::2]] == [1.0, 0.0]
    assert math.isnan(results[1].total) and "image_size" in results[1].error and results[1].parts == {}


def test_bad_reference_raises():
    with pytest.raises(SampleError, match="'boxes\\[0\\]'"):
        score("x", {"task": "grounding", "answer": "", "boxes": [[5, 5, 1, 1]], "labels": ["a"], "image_size": [9, 9]},
              num_tokens=1, config=RewardConfig())


def test_import_rewards_is_light():
    code = "import sys, rewards; print(sorted(m for m in ('fastapi', 'ray', 'torch', 'uvicorn', 'httpx') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.replace("'", '"')) == []
    for name in ("score", "bbox_reward", "tag_count", "soft_overlong_punishment", "label_accuracy"):
        assert callable(getattr(rewards, name))


junk_text = st.one_of(st.text(max_size=300), st.lists(st.sampled_from(
    ["<think>\n", "\n</think>\n", "<answer>", "</answer>", "<box>", "</box>", "[[", "]]", "1e999", "nan", ",", "nodule", '{"bbox_2d": [1,2,3,4]}', "yes"]
), max_size=25).map("".join))


@settings(max_examples=200, deadline=None)
@given(junk_text, st.integers(0, 5000))
def test_garbage_completions_score_in_range(completion, num_tokens):
    cfg = RewardConfig()
    for ref in (GROUNDING, MCQ, VQA_YES):
        out = score(completion, ref, num_tokens=num_tokens, config=cfg)
        p = out["parts"]
        assert 0 <= p["accuracy"] <= 1 and 0 <= p["bbox"] <= 1 and 0 <= p["tag_count"] <= 1 and -1 <= p["overlong"] <= 0
        assert out["total"] == pytest.approx(sum(p.values())) and math.isfinite(out["total"])
