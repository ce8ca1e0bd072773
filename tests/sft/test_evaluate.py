"""sft/evaluate.py scoring: box IoU by hand, and the reference answers scoring (almost) 1."""
from __future__ import annotations

import dataclasses

import pytest

from medmo_rl.schema import load_samples
from medmo_rl.metrics import box_iou
from sft.evaluate import score_grounding


def test_box_iou_by_hand():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)  # half overlap
    assert box_iou((0, 0, 10, 10), (2, 2, 4, 4)) == pytest.approx(4 / 100)  # nested
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching edges
    assert box_iou((0, 0, 0, 10), (0, 0, 0, 10)) == 0.0  # degenerate


def test_reference_answers_score_near_one_and_garbage_zero(synthetic_dir):
    samples = load_samples(synthetic_dir["grounding"]).samples[:20]
    ious, parsed = score_grounding([s.answer for s in samples], samples)
    assert all(parsed) and min(ious) > 0.97  # only the 0–1000 rounding (≤ 0.032 px at 64 px) is lost
    think = [f"<think>\n\n</think>\n<answer>\n{s.answer}\n</answer>" for s in samples]
    assert score_grounding(think, samples)[0] == pytest.approx(ious)
    ious, parsed = score_grounding(["nodule", "mass <box>[[1, 2]]</box>", ""] , samples[:3])
    assert ious == [0.0, 0.0, 0.0] and parsed == [False, False, False]


def test_best_prediction_counts_per_reference_box(synthetic_dir):
    s = load_samples(synthetic_dir["grounding"]).samples[0]
    s = dataclasses.replace(s, boxes=((0.0, 0.0, 32.0, 32.0), (32.0, 32.0, 64.0, 64.0)), labels=("a", "b"),
                            image_size=(64, 64))
    # one exact box for the first reference, nothing near the second → (1 + 0) / 2
    ious, parsed = score_grounding(["a <box>[[0, 0, 500, 500]]</box>"], [s])
    assert ious == [pytest.approx(0.5)] and parsed == [True]
