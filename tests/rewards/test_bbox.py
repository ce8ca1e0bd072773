import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rewards.bbox import MAX_MATCHED_BOXES, bbox_reward, bbox_reward_batch, bbox_reward_reference

SQRT2 = math.sqrt(2.0)


def both(pred, gt, **kw):
    """The vectorised value, after checking the reference gives the identical float."""
    v, r = bbox_reward(pred, gt, **kw), bbox_reward_reference(pred, gt, **kw)
    assert v == r, (v, r)
    return v


# ---------------------------------------------------------------------------------- by hand
def test_perfect_match_is_one():
    assert both([[10, 20, 50, 60]], [[10, 20, 50, 60]]) == 1.0
    assert both([[60, 60, 90, 120], [10, 20, 50, 60]], [[10, 20, 50, 60], [60, 60, 90, 120]]) == 1.0  # order-free


def test_disjoint_boxes_inferred_size():
    # W = H = 10 (GT max x2, y2): L1 = 80 / (2·sqrt(200)) = 2.83 → clipped to 1 → L1 term 0.
    # GIoU: inter 0, union 200, enclosing 30·30 = 900 → 0 − 700/900 = −7/9; (GIoU+1)/2 = 1/9.
    # s = (5·0 + 2·(1/9)) / 7 = 2/63
    assert both([[20, 20, 30, 30]], [[0, 0, 10, 10]]) == pytest.approx(2 / 63, rel=1e-12)


def test_disjoint_boxes_given_size():
    # (W, H) = (100, 100): L1 = 80 / (2·100·sqrt2) = 0.4/sqrt2; s = (5·(1 − 0.4/sqrt2) + 2/9) / 7
    want = (5 * (1 - 0.4 / SQRT2) + 2 / 9) / 7  # 0.544001...
    assert both([[20, 20, 30, 30]], [[0, 0, 10, 10]], image_size=(100, 100)) == pytest.approx(want, rel=1e-12)


def test_partial_overlap():
    # pred [0,0,10,10], gt [5,0,15,10], image 20×20: inter 50, union 150, enclosing 150 → GIoU = 1/3
    # L1 = (5 + 0 + 5 + 0) / (2·sqrt(800)) ; s = (5·(1 − L1) + 2·(2/3)) / 7 = 0.778493...
    l1 = 10 / (2 * math.sqrt(800))
    want = (5 * (1 - l1) + 2 * (2 / 3)) / 7
    assert both([[0, 0, 10, 10]], [[5, 0, 15, 10]], image_size=(20, 20)) == pytest.approx(want, rel=1e-12)
    assert want == pytest.approx(0.778493, abs=1e-6)


def test_no_ground_truth_is_neutral():
    assert both([], []) == 0.5
    assert both([[0, 0, 5, 5]], [], lambda_fp=1.0) == 0.5


def test_no_predictions_is_zero():
    assert both([], [[0, 0, 10, 10], [20, 20, 30, 30]]) == 0.0
    assert both([], [[0, 0, 10, 10]], lambda_fn=0.3) == 0.0  # clip01(0 − pen)


def test_penalties():
    g0, g1, far = [0, 0, 10, 10], [20, 20, 40, 40], [500, 500, 510, 510]
    # G = 1, P = 2, m = 1: base = 1, pen = 0.2·(2 − 1) / 1 → 0.8
    assert both([g0, far], [g0], lambda_fp=0.2) == pytest.approx(0.8, rel=1e-12)
    # G = 2, P = 1, m = 1: base = 1/2, pen = 0.1·(2 − 1) / 2 = 0.05 → 0.45
    assert both([g0], [g0, g1], lambda_fn=0.1) == pytest.approx(0.45, rel=1e-12)
    assert both([g0], [g0, g1], lambda_fn=0.1, square=True) == pytest.approx(0.45**2, rel=1e-12)
    assert both([g0], [g0, g1]) == 0.5  # default λ = 0: coverage only


def test_invalid_prediction_counts_in_p_but_is_not_matched():
    g = [0, 0, 10, 10]
    for bad in ([math.nan, 0, 1, 1], [0, 0, math.inf, 1], [5, 5, 5, 10], [5, 5, 4, 10], ["a", 0, 1, 1], [1, 2, 3], None):
        assert both([g, bad], [g]) == 1.0  # m = 1, base 1
        assert both([g, bad], [g], lambda_fp=0.5) == pytest.approx(0.5, rel=1e-12)  # P = 2 → pen 0.5
        assert both([bad], [g]) == 0.0  # nothing matchable


def test_hungarian_beats_greedy():
    # x-extents only (all boxes span y 0..10). Cost ∝ shift: a–g0 2, a–g1 6, b–g0 4, b–g1 12.
    # Greedy takes the best pair a–g0 first and is left with b–g1 (total 14); the optimal
    # matching is a–g1 + b–g0 (total 10). The reward must be the optimum's.
    g0, g1 = [0, 0, 10, 10], [4, 0, 14, 10]
    a, b = [1, 0, 11, 10], [-2, 0, 8, 10]
    kw = dict(image_size=(20, 20))

    def pair(p, g):  # G = 1: the reward is the pair score s
        return both([p], [g], **kw)

    optimal = (pair(a, g1) + pair(b, g0)) / 2
    greedy = (pair(a, g0) + pair(b, g1)) / 2
    r = both([a, b], [g0, g1], **kw)
    assert r == pytest.approx(optimal, rel=1e-12)
    assert r > greedy + 0.01


def test_size_given_versus_inferred_and_scale_invariance():
    pred, gt = [[12, 8, 40, 33]], [[10, 10, 40, 30]]
    inferred = both(pred, gt)  # (W, H) = (40, 30)
    assert inferred == both(pred, gt, image_size=(40, 30))
    assert inferred != both(pred, gt, image_size=(400, 300))
    scaled = both([[c * 7 for c in b] for b in pred], [[c * 7 for c in b] for b in gt], image_size=(280, 210))
    assert scaled == pytest.approx(inferred, rel=1e-12)
    # a bad image_size is ignored per component → 1
    assert both(pred, gt, image_size=(-5, 0)) == both(pred, gt, image_size=(1, 1))


def test_ten_thousand_boxes_are_capped_not_exploding():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 1000, (10_000, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 50, (10_000, 2))], axis=1)
    assert bbox_reward(boxes.tolist(), boxes[:3].tolist()) == 1.0  # the 3 GTs are among the first 1000
    # 10⁴ × 10⁴: only MAX_MATCHED_BOXES per side are matched; the other 9000 GTs are misses
    assert bbox_reward(boxes, boxes) == pytest.approx(MAX_MATCHED_BOXES / 10_000, rel=1e-12)
    # preds beyond the cap are unmatched FPs
    assert bbox_reward(boxes.tolist(), boxes[:1].tolist(), lambda_fp=1e-4) == pytest.approx(1 - 9_999e-4, rel=1e-9)


def test_batch_validates_lengths():
    with pytest.raises(ValueError, match="batch lengths"):
        bbox_reward_batch([[]], [[], []])


# ------------------------------------------------------------------- vectorised vs reference
def _random_boxes(rng, n, grid):
    xy = rng.uniform(0, 100, (n, 2))
    b = np.concatenate([xy, xy + rng.uniform(-5, 50, (n, 2))], axis=1)  # some have x2 < x1: invalid
    return (np.round(b / 10) * 10 if grid else b).tolist()


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_matches_reference_over_seeds(seed):
    rng = np.random.default_rng(seed)
    B, grid = 300, seed % 2 == 1  # grid: integer coordinates, exact ties and duplicates
    gts = [_random_boxes(rng, int(rng.integers(0, 5)), grid) for _ in range(B)]
    preds = [_random_boxes(rng, int(rng.integers(0, 9)), grid) for _ in range(B)]  # > 6 → scipy path
    for i in range(0, B, 5):
        if preds[i]:
            preds[i].append(list(preds[i][0]))
    sizes = [None if rng.random() < 0.5 else (200, 150) for _ in range(B)]
    kw = dict(lambda_fn=0.05 * seed, lambda_fp=0.1, square=seed == 3)
    vec = bbox_reward_batch(preds, gts, sizes, **kw)
    ref = np.array([bbox_reward_reference(p, g, image_size=s, **kw) for p, g, s in zip(preds, gts, sizes)])
    np.testing.assert_array_equal(vec, ref)
    assert 0.1 < vec.mean() < 0.9  # not a degenerate comparison


# ------------------------------------------------------------------------------ properties
finite = st.floats(-1e3, 1e3, allow_nan=False)
wild = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**30), 10**30),
    st.sampled_from([1e308, -1e308, 1e-308, 0.0]), st.text(max_size=3), st.none(), st.booleans(),
)
box = st.one_of(st.lists(finite, min_size=4, max_size=4), st.lists(wild, min_size=4, max_size=4), st.lists(wild, max_size=6), wild)
boxes = st.one_of(st.lists(box, max_size=8), wild, st.dictionaries(st.text(max_size=2), finite, max_size=2))
size = st.one_of(st.none(), st.tuples(wild, wild), st.tuples(st.floats(1, 2000), st.floats(1, 2000)), wild)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(boxes, boxes, size, st.booleans())
def test_garbage_never_raises_and_stays_in_range(pred, gt, image_size, square):
    kw = dict(image_size=image_size, lambda_fn=0.1, lambda_fp=0.1, square=square)
    v = bbox_reward(pred, gt, **kw)
    assert 0.0 <= v <= 1.0
    assert v == bbox_reward_reference(pred, gt, **kw)


coord = st.one_of(finite, st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 1e300]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.lists(st.lists(coord, min_size=4, max_size=4), max_size=7),
                          st.lists(st.lists(coord, min_size=4, max_size=4), max_size=4)), min_size=1, max_size=6))
def test_batch_equals_reference_on_extreme_coordinates(samples):
    preds, gts = [p for p, _ in samples], [g for _, g in samples]
    vec = bbox_reward_batch(preds, gts, None, lambda_fp=0.05)
    ref = [bbox_reward_reference(p, g, lambda_fp=0.05) for p, g in samples]
    assert vec.tolist() == ref
    assert all(0.0 <= v <= 1.0 for v in ref)
