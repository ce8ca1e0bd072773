"""sft/evaluate.py scoring: the reference answers score (almost) 1, and the IoU is the Hungarian one."""
from __future__ import annotations

import dataclasses

import pytest

from medmo_rl.schema import load_samples
from sft.evaluate import score_grounding


def test_reference_answers_score_near_one_and_garbage_zero(synthetic_dir):
    samples = load_samples(synthetic_dir["grounding"]).samples[:20]
    ious, parsed = score_grounding([s.answer for s in samples], samples)
    assert all(parsed) and min(ious) > 0.97  # only the 0–1000 rounding (≤ 0.032 px at 64 px) is lost
    think = [f"<think>\n\n</think>\n<answer>\n{s.answer}\n</answer>" for s in samples]
    assert score_grounding(think, samples)[0] == pytest.approx(ious)
    ious, parsed = score_grounding(["nodule", "mass <box>[[1, 2]]</box>", ""] , samples[:3])
    assert ious == [0.0, 0.0, 0.0] and parsed == [False, False, False]


def test_one_prediction_counts_for_one_reference_box(synthetic_dir):
    s = load_samples(synthetic_dir["grounding"]).samples[0]
    # reference a = (0,0,32,32) and b = (0,0,32,16) inside it; one predicted box exactly on a.
    # IoU(p, a) = 1, IoU(p, b) = 512/1024 = 0.5. Best IoU per reference box: (1 + 0.5)/2 = 0.75;
    # Hungarian (one-to-one, b unmatched counts 0): (1 + 0)/2 = 0.5
    s = dataclasses.replace(s, boxes=((0.0, 0.0, 32.0, 32.0), (0.0, 0.0, 32.0, 16.0)), labels=("a", "b"),
                            image_size=(64, 64))
    ious, parsed = score_grounding(["a <box>[[0, 0, 500, 500]]</box>"], [s])
    assert ious == [pytest.approx(0.5)] and parsed == [True]


def test_boxes_in_the_reasoning_are_not_predictions(synthetic_dir):
    s = load_samples(synthetic_dir["grounding"]).samples[0]
    ious, parsed = score_grounding([f"<think>{s.answer}</think>\n<answer>none</answer>"], [s])
    assert ious == [0.0] and parsed == [False]
