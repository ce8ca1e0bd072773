"""medmo_rl/synthetic.py (v3): 1–4 lesions per image, kinds the pixels decide, deterministic."""
from collections import Counter

import numpy as np
import pytest
from medmo_rl.boxes import parse_boxes, to_pixels
from medmo_rl.config import load_config
from medmo_rl.datasets import EVAL_OFFSET
from medmo_rl.schema import load_samples
from medmo_rl.synthetic import COUNT_PROMPT, KIND_PROMPT, SIDE_RANGE, make_records


def _grounding(i, tmp_path, seed=0, size=64, box_order="reading"):
    img, recs = make_records(i, seed, size, str(tmp_path / f"{i}.png"), box_order=box_order)
    g = [r for r in recs if r.task == "grounding"]
    return img, recs, (g[0] if g else None)


def test_records_deterministic_and_every_answer_box_is_a_bright_lesion_where_the_record_says(tmp_path):
    i = next(i for i in range(50) if (g := _grounding(i, tmp_path)[2]) is not None and len(g.boxes) >= 3)
    img1, r1, g = _grounding(i, tmp_path)
    img2, r2, _ = _grounding(i, tmp_path)
    assert np.array_equal(np.asarray(img1), np.asarray(img2)) and r1 == r2
    img3, _, _ = _grounding(i, tmp_path, seed=1)
    assert not np.array_equal(np.asarray(img1), np.asarray(img3))
    arr = np.asarray(img1)[..., 0].astype(float)
    parsed = parse_boxes(g.answer)
    assert len(parsed.boxes) == len(g.boxes) == len(g.labels) and list(parsed.labels) == list(g.labels)
    for rel, box in zip(parsed.boxes, g.boxes):  # the 0–1000 answer maps back onto the pixel box within 1 px
        assert np.allclose(to_pixels(rel, (64, 64)), box, atol=1.0)
        x1, y1, x2, y2 = (int(c) for c in box)
        assert arr[y1:y2, x1:x2].mean() > arr.mean() + 20


def test_counts_one_to_four_with_most_images_holding_several_and_boxes_inside_apart(tmp_path):
    counts = Counter()
    for i in range(300):
        _, recs, g = _grounding(i, tmp_path)
        if g is None:
            counts[0] += 1
            continue
        n = len(g.boxes)
        counts[n] += 1
        assert 1 <= n <= 4
        (count,) = [r for r in recs if r.prompt == COUNT_PROMPT]
        assert count.answer == str(n)
        for k, (x1, y1, x2, y2) in enumerate(g.boxes):
            assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64
            for (a1, b1, a2, b2) in g.boxes[k + 1:]:  # at least 2 px apart on one axis: never overlapping
                assert x2 + 2 <= a1 or a2 + 2 <= x1 or y2 + 2 <= b1 or b2 + 2 <= y1
    with_lesions = sum(v for k, v in counts.items() if k)
    assert set(counts) == {0, 1, 2, 3, 4}
    assert sum(v for k, v in counts.items() if k >= 2) / with_lesions > 0.5  # the eval needs ≥ 30 %
    assert 0.03 < counts[0] / 300 < 0.2  # normal images exist, so "is there a lesion?" has both answers


def test_kind_follows_size_and_shape_varies_within_each_kind(tmp_path):
    """A nodule spans 12–22 % of the side, a mass 28–42 %: the size decides the kind, and both
    shapes occur for both kinds, so the label is learnable from the pixels but not from the shape."""
    seen = set()
    for i in range(150):
        img, recs, g = _grounding(i, tmp_path)
        if g is None:
            continue
        for (x1, y1, x2, y2), kind in zip(g.boxes, g.labels):
            lo, hi = (round(f * 64) for f in SIDE_RANGE[kind])
            assert lo <= x2 - x1 <= hi and lo <= y2 - y1 <= hi
            corner = np.asarray(img)[int(y1), int(x1), 0]  # a rectangle fills its corner, an ellipse does not
            seen.add((kind, bool(corner > 150)))
        (kinds,) = [r for r in recs if r.prompt == KIND_PROMPT]
        assert kinds.answer == " and ".join(k for k in ("nodule", "mass") if k in g.labels)
    assert seen == {("mass", True), ("mass", False), ("nodule", True), ("nodule", False)}


def test_answer_lists_nodules_then_masses_each_in_reading_order(tmp_path):
    for i in range(60):
        _, _, g = _grounding(i, tmp_path)
        if g is None:
            continue
        keys = [(("nodule", "mass").index(k), b[1], b[0]) for b, k in zip(g.boxes, g.labels)]
        assert keys == sorted(keys)
        assert g.answer.count("<box>") == len(set(g.labels))  # one segment per kind: "nodule <box>[[…], […]]</box>"


def test_annotation_order_is_the_same_image_and_boxes_listed_as_drawn(tmp_path):
    """box_order="annotation" changes only the order of a kind's boxes in the answer (the drawing
    order, not sorted): the same pixels and the same set of (kind, box); nodules still come first."""
    reordered = 0
    for i in range(60):
        img_r, recs_r, g_r = _grounding(i, tmp_path, box_order="reading")
        img_a, recs_a, g_a = _grounding(i, tmp_path, box_order="annotation")
        assert np.array_equal(np.asarray(img_r), np.asarray(img_a))
        if g_r is None:
            assert g_a is None
            continue
        assert sorted(zip(g_a.labels, g_a.boxes)) == sorted(zip(g_r.labels, g_r.boxes))
        assert list(g_a.labels) == sorted(g_a.labels, key=("nodule", "mass").index)
        for rel, box in zip(parse_boxes(g_a.answer).boxes, g_a.boxes, strict=True):  # the answer lists them so
            assert np.allclose(to_pixels(rel, (64, 64)), box, atol=1.0)
        reordered += g_a.boxes != g_r.boxes
    assert reordered >= 5  # several multi-lesion images are listed out of reading order
    with pytest.raises(ValueError, match="box_order 'random'"):
        make_records(0, 0, 64, str(tmp_path / "x.png"), box_order="random")


def test_generated_dataset_covers_every_task_and_validates(synthetic_dir):
    rep = load_samples(synthetic_dir["all"])
    assert not rep.rejected
    tasks = {s.task for s in rep.samples}
    assert tasks == {"grounding", "vqa", "caption", "report", "text_qa"}
    answers = {s.answer for s in rep.samples if s.prompt == "Is there a lesion in the image?"}
    assert answers == {"yes", "no"}


def test_eval_split_meets_the_issue_floor(tmp_path):
    """The held-out split of the tiny default (data.synthetic_eval images from EVAL_OFFSET):
    ≥ 200 grounding images, ≥ 30 % of them with two or more lesions."""
    data = load_config(None).data
    multi = total = 0
    for i in range(EVAL_OFFSET, EVAL_OFFSET + data.synthetic_eval):
        _, _, g = _grounding(i, tmp_path, seed=data.seed, size=data.synthetic_image_px)
        if g is not None:
            total += 1
            multi += len(g.boxes) >= 2
    assert total >= 200 and multi / total >= 0.3
