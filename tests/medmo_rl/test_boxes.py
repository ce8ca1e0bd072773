import math
import random

import numpy as np
import pytest

from medmo_rl.boxes import (box_iou, format_boxes, format_grounding_answer, iou_matrix, is_valid_box, parse_boxes,
                            to_pixels, to_relative, valid_box_mask)


@pytest.mark.parametrize("size", [(64, 64), (1024, 1024), (1280, 960), (333, 777), (4000, 3000)])
def test_pixel_relative_round_trip_within_one_pixel(size):
    rng = random.Random(size[0])
    for _ in range(200):
        x1, x2 = sorted(rng.uniform(0, size[0]) for _ in range(2))
        y1, y2 = sorted(rng.uniform(0, size[1]) for _ in range(2))
        back = to_pixels(to_relative((x1, y1, x2, y2), size), size)
        # one 0–1000 step is size/1000 px; rounding is off by half of that
        tol = max(1.0, max(size) / 2000 + 1e-9) if max(size) > 2000 else 1.0
        assert all(abs(a - b) <= tol for a, b in zip(back, (x1, y1, x2, y2)))


def test_relative_known_values():
    assert to_relative((32, 16, 64, 48), (64, 64)) == (500, 250, 1000, 750)
    assert to_pixels((500, 250, 1000, 750), (64, 64)) == (32.0, 16.0, 64.0, 48.0)
    assert to_relative((-5, 0, 70, 10), (64, 64)) == (0, 0, 1000, 156)  # clamped to the grid


def test_format_and_parse_medmo():
    text = format_boxes("Fractures", [[156, 516, 231, 607], [240, 529, 296, 581]])
    assert text == "Fractures <box>[[156, 516, 231, 607], [240, 529, 296, 581]]</box>"
    p = parse_boxes(text)
    assert p.fmt == "medmo" and p.reason is None
    assert p.boxes == ((156, 516, 231, 607), (240, 529, 296, 581)) and p.labels == ("Fractures", "Fractures")


def test_parse_several_medmo_segments_inside_answer_tags():
    ans = format_grounding_answer(["RBC", "WBC", "RBC"], [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]])
    p = parse_boxes(f"<think>\n\n</think>\n<answer>\n{ans}\n</answer>")
    assert p.labels == ("RBC", "RBC", "WBC")
    assert p.boxes == ((1, 2, 3, 4), (9, 10, 11, 12), (5, 6, 7, 8))


def test_parse_qwen_json_fenced_and_bare():
    fenced = '```json\n[{"bbox_2d": [10, 20, 30, 40], "label": "nodule"}, {"bbox_2d": [1, 2, 3, 4], "label": "mass"}]\n```'
    p = parse_boxes(fenced)
    assert p.fmt == "qwen_json" and p.boxes == ((10, 20, 30, 40), (1, 2, 3, 4)) and p.labels == ("nodule", "mass")
    bare = 'Here: [{"bbox_2d": [5, 6, 7, 8]}]'
    q = parse_boxes(bare)
    assert q.boxes == ((5, 6, 7, 8),) and q.labels == ("",)


@pytest.mark.parametrize("text, why", [
    ("no boxes here", "no <box>"),
    ("lesion <box>[[1, 2, 3]]</box>", "4 numbers"),
    ("lesion <box></box>", "malformed"),
    ('```json\n[{"bbox_2d": [1, 2, 3, 4}\n```', "invalid JSON"),
    ('```json\n[{"bbox_2d": "abc"}]\n```', "not 4 numbers"),
    ('```json\n[{"bbox_2d": [true, 2, 3, 4]}]\n```', "not 4 numbers"),
    (None, "not str"),
    (12, "not str"),
])
def test_malformed_parses_to_no_boxes_with_reason(text, why):
    p = parse_boxes(text)
    assert p.boxes == () and p.reason and why in p.reason


def test_parse_keeps_good_boxes_and_reports_bad_ones():
    p = parse_boxes("a <box>[[1, 2, 3, 4], [5, 6]]</box>")
    assert p.boxes == ((1, 2, 3, 4),) and "4 numbers" in p.reason


def test_parse_non_finite_numbers_come_back_as_floats():
    p = parse_boxes("x <box>[[nan, 1, inf, 3]]</box>")
    assert len(p.boxes) == 1 and math.isnan(p.boxes[0][0]) and not is_valid_box(p.boxes[0])


def test_parser_never_raises_on_garbage():
    rng = random.Random(0)
    alphabet = "<>box[]/,0123456789 {}\"bbox_2d:json`\n-.e"
    for _ in range(2000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        p = parse_boxes(s)
        assert len(p.boxes) == len(p.labels)


# --- validity and IoU: the project's one rule and one formula ----------------------------------

def _valid_by_hand(b):
    finite = all(math.isfinite(c) for c in b)
    area = (b[2] - b[0]) * (b[3] - b[1]) if finite else math.nan
    return finite and b[2] > b[0] and b[3] > b[1] and math.isfinite(area) and area > 0


@pytest.mark.parametrize("box, valid", [
    ((0, 0, 1, 1), True),
    ((0, 0, 0, 1), False),  # zero width
    ((5, 5, 4, 10), False),  # x2 < x1
    ((0, 0, math.inf, 1), False),
    ((math.nan, 0, 1, 1), False),
    ((0, 0, 1e-200, 1e-200), False),  # sides > 0 whose product underflows to 0
    ((-1e308, 0, 1e308, 1), False),  # a side of 2e308 overflows to inf
    ((0, 0, 1e154, 1e154), True),  # area 1e308, still finite
    ((1, 2, 3), False),
])
def test_is_valid_box_edge_cases(box, valid):
    assert is_valid_box(box) is valid


def test_valid_box_mask_is_is_valid_box_row_by_row():
    rng = random.Random(0)
    pool = [0.0, 1.0, -1.0, 1e-200, 1e154, 1e308, -1e308, math.inf, -math.inf, math.nan]
    rows = [[rng.choice(pool) if rng.random() < 0.3 else rng.uniform(-10, 10) for _ in range(4)] for _ in range(2000)]
    mask = valid_box_mask(np.array(rows))
    assert mask.tolist() == [_valid_by_hand(b) for b in rows] == [is_valid_box(b) for b in rows]
    assert 0.1 < mask.mean() < 0.9  # both outcomes are exercised


def test_box_iou_hand_computed():
    # overlap [5,10]x[0,10] = 50; union 100 + 100 - 50 = 150
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (2, 2, 4, 4)) == pytest.approx(4 / 100)  # nested
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching edges
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 0, 10), (0, 0, 0, 10)) == 0.0  # degenerate: empty union


def _iou_by_hand(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]) + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) - iw * ih
    return iw * ih / union if union > 0 else 0.0


@pytest.mark.parametrize("seed", range(3))
def test_iou_matrix_matches_a_loop(seed):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 20, (14, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(-5, 30, (14, 2))], axis=1).tolist()  # some inverted
    preds, gts = boxes[:8], boxes[8:]
    got = iou_matrix(preds, gts)
    assert got.shape == (8, 6)
    np.testing.assert_allclose(got, [[_iou_by_hand(p, g) for g in gts] for p in preds], rtol=1e-12, atol=0)
    assert (got > 0).sum() >= 8  # real overlaps, not a matrix of zeros
    assert iou_matrix([], gts).shape == (0, 6) and iou_matrix(preds, []).shape == (8, 0)
