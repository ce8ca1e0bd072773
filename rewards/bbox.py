"""Bounding-box reward: Hungarian-matched L1 + GIoU (MedMO, App. A.1, eqs. 7–13).

Boxes are XYXY in any ONE coordinate space (the composite reward uses absolute pixels).
With G ground-truth boxes, P predicted boxes and (W, H) the image size:

    L1_ij   = (|Δx1| + |Δy1| + |Δx2| + |Δy2|) / (2·sqrt(H² + W²))              (7)
    GIoU_ij = IoU − (|C| − |p ∪ g|) / |C|,  C the smallest enclosing box       (Rezatofighi et al.)
    C_ij    = 5·L1_ij + 2·(1 − GIoU_ij)       Hungarian matching cost         (8)
    s_k     = (w_l1·(1 − clip01(L1)) + w_giou·(GIoU + 1)/2) / (w_l1 + w_giou) (9)
    base    = Σ_k s_k / G                                                     (10)
    pen     = (λ_FN·(G − m) + λ_FP·(P − m)) / max(1, G)                       (11)
    R       = clip01(base − pen)            (squared when square=True)        (12)

m = min(P', G') matched pairs, P'/G' the matchable boxes. Edge cases as in the paper: G = 0 → 0.5;
P = 0 → clip01(−pen). The main text (Sec. 3.5.1) squares R, App. eq. 12 does not: default no square.

Departures from the paper, all for garbage input (none change a clean sample):
- A box is matchable when its coordinates are finite, x2 > x1, y2 > y1 and its area is finite and
  positive. An unmatchable box still counts in P (or G), so garbage is an FP (or an FN).
- Only the first MAX_MATCHED_BOXES matchable boxes per side enter the matching; the rest are
  unmatched and counted like any other FP/FN. This bounds memory and time (a 10⁴-box completion
  costs one 1000×G matching instead of a 10⁴×G one); a real completion has far fewer boxes.
- In the matching cost L1 is capped at L1_COST_CAP image diagonals so the cost stays finite for
  absurd coordinates; the score s uses the uncapped L1 (clipped to [0, 1] anyway).
- A GIoU that overflows to NaN (enclosing box wider than float range) counts as −1, an L1 that
  does (inf / inf) as +inf.
- (W, H) = image_size when given, else the largest x2, y2 over the matchable GT boxes; 1 where
  that is not a positive finite number. (The paper falls back to the predictions when G = 0, but
  then R = 0.5 before W, H matter.)
- Non-finite results (e.g. NaN weights) give 0.0; w_l1 + w_giou ≤ 0 gives s = 0.

`bbox_reward_batch` is the vectorised path (pairwise matrices for a whole batch in one numpy
pass, one small Hungarian solve per sample); `bbox_reward_reference` is the slow obvious loop
it is checked against (tests and bench assert identical values). Pure: numpy + scipy, no I/O.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

MATCH_W_L1 = 5.0  # App. A.1 eq. 8: matching weights, fixed by the paper
MATCH_W_GIOU = 2.0
MAX_MATCHED_BOXES = 1000
L1_COST_CAP = 1e6
NO_GT_REWARD = 0.5
_MAX_PAIRS_PER_PASS = 1 << 20  # pairs computed in one numpy pass (≈ 50 MB of temporaries)


# --------------------------------------------------------------------------------------------
# input sanitation: anything → float array [n, 4], a row of NaN for an entry that is not 4 numbers
def _is_number(c: Any) -> bool:
    return isinstance(c, numbers.Real) and not isinstance(c, (bool, np.bool_))


def _as_box_array(boxes: Any) -> np.ndarray:
    """[n, 4] float64; an entry that is not 4 real numbers becomes a NaN row (unmatchable, counted)."""
    if isinstance(boxes, np.ndarray) and boxes.ndim == 2 and boxes.shape[1] == 4 and boxes.dtype.kind in "iuf":
        return boxes.astype(np.float64, copy=False)
    if not isinstance(boxes, (list, tuple, np.ndarray)):
        return np.empty((0, 4))
    if len(boxes) == 0:
        return np.empty((0, 4))
    try:  # fast path: a clean list of lists of ints/floats
        arr = np.array(boxes)
        if arr.ndim == 2 and arr.shape[1] == 4 and arr.dtype.kind in "iuf":
            return arr.astype(np.float64, copy=False)
    except (ValueError, TypeError, OverflowError):
        pass
    out = np.full((len(boxes), 4), np.nan)
    for i, box in enumerate(boxes):
        if isinstance(box, (list, tuple, np.ndarray)) and len(box) == 4 and all(_is_number(c) for c in box):
            try:
                out[i] = [float(c) for c in box]
            except (OverflowError, ValueError):
                pass
    return out


def _matchable(b: np.ndarray) -> np.ndarray:
    """[n] bool: finite, x2 > x1, y2 > y1, area finite and positive."""
    with np.errstate(over="ignore", invalid="ignore"):
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        return np.isfinite(b).all(axis=1) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1]) & np.isfinite(area) & (area > 0)


def _size_or_none(image_size: Any) -> tuple[float, float] | None:
    if image_size is None:
        return None
    try:
        w, h = (float(v) for v in image_size)
    except (TypeError, ValueError, OverflowError):
        return None
    return w, h


def _positive_or_one(v: float) -> float:
    return v if math.isfinite(v) and v > 0 else 1.0


def _pair_score(l1, giou, w_l1: float, w_giou: float):
    """Eq. 9, elementwise on floats or arrays (one expression for both paths: identical rounding)."""
    if not (w_l1 + w_giou > 0):
        return l1 * 0.0
    l1c = np.clip(l1, 0.0, 1.0)
    return (w_l1 * (1.0 - l1c) + w_giou * ((giou + 1.0) / 2.0)) / (w_l1 + w_giou)


def _final(base: float, G: int, P: int, m: int, lambda_fn: float, lambda_fp: float, square: bool) -> float:
    """Eqs. 11–12 for one sample."""
    pen = (lambda_fn * (G - m) + lambda_fp * (P - m)) / max(1, G)
    r = min(1.0, max(0.0, base - pen))
    if square:
        r = r * r
    return r if math.isfinite(r) else 0.0


# --------------------------------------------------------------------------------------------
def bbox_reward(
    pred: Any,
    gt: Any,
    *,
    image_size: Sequence[float] | None = None,
    w_l1: float = 5.0,
    w_giou: float = 2.0,
    lambda_fn: float = 0.0,
    lambda_fp: float = 0.0,
    square: bool = False,
) -> float:
    """R_bbox of one sample (module docstring). pred, gt: [[x1, y1, x2, y2], ...]; never raises."""
    return float(
        bbox_reward_batch(
            [pred], [gt], [image_size], w_l1=w_l1, w_giou=w_giou,
            lambda_fn=lambda_fn, lambda_fp=lambda_fp, square=square,
        )[0]
    )


def bbox_reward_batch(
    preds_list: Sequence[Any],
    gts_list: Sequence[Any],
    image_sizes: Sequence[Sequence[float] | None] | None = None,
    *,
    w_l1: float = 5.0,
    w_giou: float = 2.0,
    lambda_fn: float = 0.0,
    lambda_fp: float = 0.0,
    square: bool = False,
) -> np.ndarray:
    """R_bbox for B samples at once → float64 [B]. Same values as `bbox_reward_reference`.

    preds_list, gts_list: B box lists; image_sizes: B × (W, H) or None (None: infer per sample).
    """
    B = len(preds_list)
    if len(gts_list) != B or (image_sizes is not None and len(image_sizes) != B):
        raise ValueError(f"batch lengths differ: {B} preds, {len(gts_list)} gts, "
                         f"{'no' if image_sizes is None else len(image_sizes)} image sizes")
    preds = [_as_box_array(p) for p in preds_list]
    gts = [_as_box_array(g) for g in gts_list]
    sizes = [None] * B if image_sizes is None else [_size_or_none(s) for s in image_sizes]
    out = np.empty(B)
    # group samples so that one numpy pass never holds more than _MAX_PAIRS_PER_PASS pairs
    start, pairs = 0, 0
    for b in range(B):
        n = min(len(preds[b]), MAX_MATCHED_BOXES) * min(len(gts[b]), MAX_MATCHED_BOXES)
        if b > start and pairs + n > _MAX_PAIRS_PER_PASS:
            out[start:b] = _batch_pass(preds[start:b], gts[start:b], sizes[start:b],
                                       w_l1, w_giou, lambda_fn, lambda_fp, square)
            start, pairs = b, 0
        pairs += n
    if start < B:
        out[start:] = _batch_pass(preds[start:], gts[start:], sizes[start:],
                                  w_l1, w_giou, lambda_fn, lambda_fp, square)
    return out


def _segment_rank(mask: np.ndarray, seg: np.ndarray, seg_start: np.ndarray) -> np.ndarray:
    """1-based rank of each True entry among the True entries of its segment."""
    c = np.cumsum(mask)
    before = np.concatenate(([0], c))[seg_start]
    return c - before[seg]


def _batch_pass(preds, gts, sizes, w_l1, w_giou, lambda_fn, lambda_fp, square) -> np.ndarray:
    B = len(preds)
    P = np.array([len(p) for p in preds], dtype=np.int64)
    G = np.array([len(g) for g in gts], dtype=np.int64)
    pb = np.concatenate(preds) if B else np.empty((0, 4))
    gb = np.concatenate(gts) if B else np.empty((0, 4))
    p_seg, g_seg = np.repeat(np.arange(B), P), np.repeat(np.arange(B), G)
    p_start, g_start = np.cumsum(P) - P, np.cumsum(G) - G

    # matchable boxes, at most MAX_MATCHED_BOXES per sample and side, kept in input order
    p_ok = _matchable(pb)
    p_ok &= _segment_rank(p_ok, p_seg, p_start) <= MAX_MATCHED_BOXES
    g_ok = _matchable(gb)
    g_ok &= _segment_rank(g_ok, g_seg, g_start) <= MAX_MATCHED_BOXES
    vp, vp_seg, vg, vg_seg = pb[p_ok], p_seg[p_ok], gb[g_ok], g_seg[g_ok]
    nP, nG = np.bincount(vp_seg, minlength=B), np.bincount(vg_seg, minlength=B)
    vp_start, vg_start = np.cumsum(nP) - nP, np.cumsum(nG) - nG

    # (W, H): image_size, else the largest GT x2, y2 (1 where not positive)
    inferred = np.full((B, 2), -np.inf)
    np.maximum.at(inferred, vg_seg, vg[:, 2:4])
    norm = np.empty(B)
    for b in range(B):
        w, h = sizes[b] if sizes[b] is not None else (float(inferred[b, 0]), float(inferred[b, 1]))
        norm[b] = 2.0 * np.hypot(_positive_or_one(w), _positive_or_one(h))

    # all (pred, gt) pairs of every sample, pred-major within a sample
    n_pairs = nP * nG
    pair_seg = np.repeat(np.arange(B), n_pairs)
    k = np.arange(pair_seg.size) - np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs)
    gi = nG[pair_seg]  # > 0 wherever there is a pair
    pi = k // gi
    p = vp[vp_start[pair_seg] + pi]
    g = vg[vg_start[pair_seg] + k - pi * gi]
    l1, giou = _pairwise(p, g, norm[pair_seg])
    cost = MATCH_W_L1 * np.minimum(l1, L1_COST_CAP) + MATCH_W_GIOU * (1.0 - giou)

    # Hungarian matching: one scipy solve per sample with ≥ 2 boxes on both sides;
    # a 1×n or n×1 matching is the first minimum of its segment (what scipy returns too)
    m = np.minimum(nP, nG)
    pair_start = np.cumsum(n_pairs) - n_pairs
    matched: list[np.ndarray] = []
    one = np.flatnonzero(m == 1)
    if one.size:
        order = np.lexsort((cost, pair_seg))
        matched.append(order[pair_start[one]])
    for b in np.flatnonzero(m >= 2):
        o = pair_start[b]
        rows, cols = linear_sum_assignment(cost[o : o + n_pairs[b]].reshape(nP[b], nG[b]))
        matched.append(o + rows * nG[b] + cols)
    idx = np.sort(np.concatenate(matched)) if matched else np.empty(0, dtype=np.int64)
    s = _pair_score(l1[idx], giou[idx], w_l1, w_giou)

    # Σ s_k per sample with math.fsum (exactly rounded, so independent of summation order)
    s_seg = pair_seg[idx]
    bounds = np.searchsorted(s_seg, np.arange(B + 1))
    s_list = s.tolist()
    out = np.empty(B)
    for b in range(B):
        if G[b] == 0:
            out[b] = NO_GT_REWARD
            continue
        base = math.fsum(s_list[bounds[b] : bounds[b + 1]]) / int(G[b])
        out[b] = _final(base, int(G[b]), int(P[b]), int(m[b]), lambda_fn, lambda_fp, square)
    return out


def _pairwise(p: np.ndarray, g: np.ndarray, norm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 7 L1 and GIoU for aligned rows p[k], g[k] (all matchable), normalised by norm[k]."""
    with np.errstate(over="ignore", invalid="ignore"):
        px1, py1, px2, py2 = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
        gx1, gy1, gx2, gy2 = g[:, 0], g[:, 1], g[:, 2], g[:, 3]
        l1 = (np.abs(px1 - gx1) + np.abs(py1 - gy1) + np.abs(px2 - gx2) + np.abs(py2 - gy2)) / norm
        iw = np.maximum(np.minimum(px2, gx2) - np.maximum(px1, gx1), 0.0)
        ih = np.maximum(np.minimum(py2, gy2) - np.maximum(py1, gy1), 0.0)
        inter = iw * ih
        union = (px2 - px1) * (py2 - py1) + (gx2 - gx1) * (gy2 - gy1) - inter
        cw = np.maximum(px2, gx2) - np.minimum(px1, gx1)
        ch = np.maximum(py2, gy2) - np.minimum(py1, gy1)
        c = cw * ch
        giou = inter / union - (c - union) / c
    return np.where(np.isnan(l1), np.inf, l1), np.where(np.isnan(giou), -1.0, giou)


# --------------------------------------------------------------------------------------------
def bbox_reward_reference(
    pred: Any,
    gt: Any,
    *,
    image_size: Sequence[float] | None = None,
    w_l1: float = 5.0,
    w_giou: float = 2.0,
    lambda_fn: float = 0.0,
    lambda_fp: float = 0.0,
    square: bool = False,
) -> float:
    """The same R_bbox as a slow, obvious per-sample loop over Python floats (tests and bench)."""

    def as_boxes(x: Any) -> list[tuple[float, ...] | None]:
        if not isinstance(x, (list, tuple, np.ndarray)):
            return []
        out = []
        for box in x:
            try:
                ok = isinstance(box, (list, tuple, np.ndarray)) and len(box) == 4 and all(_is_number(c) for c in box)
                out.append(tuple(float(c) for c in box) if ok else None)
            except (OverflowError, ValueError):
                out.append(None)
        return out

    def matchable(b: tuple[float, ...] | None) -> bool:
        if b is None or not all(math.isfinite(c) for c in b) or not (b[2] > b[0] and b[3] > b[1]):
            return False
        area = (b[2] - b[0]) * (b[3] - b[1])
        return math.isfinite(area) and area > 0

    preds, gts = as_boxes(pred), as_boxes(gt)
    P, G = len(preds), len(gts)
    if G == 0:
        return NO_GT_REWARD
    vp = [b for b in preds if matchable(b)][:MAX_MATCHED_BOXES]
    vg = [b for b in gts if matchable(b)][:MAX_MATCHED_BOXES]
    size = _size_or_none(image_size)
    if size is None:
        size = (max((b[2] for b in vg), default=-math.inf), max((b[3] for b in vg), default=-math.inf))
    norm = 2.0 * np.hypot(_positive_or_one(size[0]), _positive_or_one(size[1]))

    l1 = np.zeros((len(vp), len(vg)))
    giou = np.zeros((len(vp), len(vg)))
    for i, (px1, py1, px2, py2) in enumerate(vp):
        for j, (gx1, gy1, gx2, gy2) in enumerate(vg):
            with np.errstate(over="ignore", invalid="ignore"):  # absurd coordinates: inf/NaN, fixed below
                d = np.float64(abs(px1 - gx1) + abs(py1 - gy1) + abs(px2 - gx2) + abs(py2 - gy2)) / norm
                inter = max(min(px2, gx2) - max(px1, gx1), 0.0) * max(min(py2, gy2) - max(py1, gy1), 0.0)
                union = (px2 - px1) * (py2 - py1) + (gx2 - gx1) * (gy2 - gy1) - inter
                c = (max(px2, gx2) - min(px1, gx1)) * (max(py2, gy2) - min(py1, gy1))
                g = np.float64(inter) / union - (np.float64(c) - union) / c
            l1[i, j] = math.inf if math.isnan(d) else d
            giou[i, j] = -1.0 if math.isnan(g) else g
    cost = MATCH_W_L1 * np.minimum(l1, L1_COST_CAP) + MATCH_W_GIOU * (1.0 - giou)
    rows, cols = linear_sum_assignment(cost)
    scores = [float(_pair_score(l1[i, j], giou[i, j], w_l1, w_giou)) for i, j in zip(rows, cols)]
    return _final(math.fsum(scores) / G, G, P, len(rows), lambda_fn, lambda_fp, square)
