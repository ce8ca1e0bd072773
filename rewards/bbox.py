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
- A box is matchable when `medmo_rl.boxes.is_valid_box` holds (the project's one rule: finite
  coordinates, x2 > x1, y2 > y1, area finite and positive). An unmatchable box still counts in P
  (or G), so garbage is an FP (or an FN).
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

`bbox_reward_batch` is the vectorised path: the pairwise matrices of a whole batch in one numpy
pass, and the matching solved per group of samples of one shape by enumerating assignments in
numpy (≤ 6 boxes a side; `medmo_rl.metrics.hungarian_match` per sample beyond). `bbox_reward_reference`
is the slow obvious per-sample loop with that matcher; tests and bench assert identical values.
Intersection and union come from `medmo_rl.boxes.iou_terms`, the eval's IoU.
Pure: numpy + scipy, no I/O.
"""
from __future__ import annotations

import functools
import itertools
import math
import numbers
from typing import Any, Sequence

import numpy as np

from medmo_rl.boxes import iou_terms, is_valid_box, valid_box_mask
from medmo_rl.metrics import hungarian_match

MATCH_W_L1 = 5.0  # App. A.1 eq. 8: matching weights, fixed by the paper
MATCH_W_GIOU = 2.0
MAX_MATCHED_BOXES = 1000
L1_COST_CAP = 1e6
NO_GT_REWARD = 0.5
_MAX_PAIRS_PER_PASS = 1 << 20  # pairs computed in one numpy pass (≈ 50 MB of temporaries)
_ENUM_MAX_N = 6  # matchings up to 6×6 solved by enumeration (≤ 720 assignments)


# --------------------------------------------------------------------------------------------
# input sanitation: anything → float rows [n, 4]; an entry that is not 4 real numbers → a NaN row
def _is_number(c: Any) -> bool:
    return isinstance(c, numbers.Real)  # bools count as 0/1, as everywhere in Python


def _as_box_array(boxes: Any) -> np.ndarray:
    """One sample's boxes → [n, 4] float64; not a list → no boxes; a bad entry → a NaN row."""
    if not isinstance(boxes, (list, tuple, np.ndarray)) or len(boxes) == 0:
        return np.empty((0, 4))
    out = np.full((len(boxes), 4), np.nan)
    for i, box in enumerate(boxes):
        if isinstance(box, (list, tuple, np.ndarray)) and len(box) == 4 and all(_is_number(c) for c in box):
            try:
                out[i] = [float(c) for c in box]
            except (OverflowError, ValueError):
                pass
    return out


def _flatten(boxes_list: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """B samples' boxes → (all rows [N, 4] float64, rows per sample [B]); one numpy call if clean."""
    try:
        if set(map(type, boxes_list)) <= {list, tuple}:
            flat = [b for x in boxes_list for b in x]
            arr = np.array(flat) if flat else np.empty((0, 4))
            if arr.ndim == 2 and arr.shape[1] == 4 and arr.dtype.kind in "iuf":
                return arr.astype(np.float64, copy=False), np.array([len(x) for x in boxes_list], dtype=np.int64)
    except (ValueError, TypeError, OverflowError):
        pass
    arrays = [_as_box_array(x) for x in boxes_list]
    rows = np.concatenate(arrays) if arrays else np.empty((0, 4))
    return rows, np.array([len(a) for a in arrays], dtype=np.int64)


def _size_or_none(image_size: Any) -> tuple[float, float] | None:
    if image_size is None:
        return None
    try:
        w, h = (float(v) for v in image_size)
    except (TypeError, ValueError, OverflowError):
        return None
    return w, h


def _sizes(image_sizes: Sequence[Any] | None, B: int) -> tuple[np.ndarray, np.ndarray]:
    """→ (W, H) rows [B, 2] and whether each was given [B]; an unusable size counts as not given."""
    if image_sizes is None:
        return np.zeros((B, 2)), np.zeros(B, dtype=bool)
    try:  # fast path: every size given as two numbers (NaN: maybe a None numpy let through)
        wh = np.array(image_sizes, dtype=np.float64)
        if wh.shape == (B, 2) and not np.isnan(wh).any():
            return wh, np.ones(B, dtype=bool)
    except (ValueError, TypeError, OverflowError):
        pass
    wh, given = np.zeros((B, 2)), np.zeros(B, dtype=bool)
    if image_sizes is not None:
        for b, size in enumerate(image_sizes):
            size = _size_or_none(size)
            if size is not None:
                wh[b], given[b] = size, True
    return wh, given


def _positive_or_one(v):
    """Elementwise: v where finite and > 0, else 1 (floats or arrays)."""
    return np.where(np.isfinite(v) & (v > 0), v, 1.0)


def _pair_score(l1, giou, w_l1: float, w_giou: float):
    """Eq. 9, elementwise on floats or arrays (one expression for both paths: identical rounding)."""
    if not (w_l1 + w_giou > 0):
        return l1 * 0.0
    l1c = np.clip(l1, 0.0, 1.0)
    return (w_l1 * (1.0 - l1c) + w_giou * ((giou + 1.0) / 2.0)) / (w_l1 + w_giou)


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
    """R_bbox for B samples at once → float64 [B], the same values as `bbox_reward_reference`.

    preds_list, gts_list: B box lists; image_sizes: B × (W, H) or None (None: infer per sample).
    """
    B = len(preds_list)
    if len(gts_list) != B or (image_sizes is not None and len(image_sizes) != B):
        raise ValueError(f"batch lengths differ: {B} preds, {len(gts_list)} gts, "
                         f"{'no' if image_sizes is None else len(image_sizes)} image sizes")
    pb, P = _flatten(preds_list)
    gb, G = _flatten(gts_list)
    wh, given = _sizes(image_sizes, B)
    p_off = np.concatenate(([0], np.cumsum(P)))
    g_off = np.concatenate(([0], np.cumsum(G)))
    kw = dict(w_l1=w_l1, w_giou=w_giou, lambda_fn=lambda_fn, lambda_fp=lambda_fp, square=square)
    # passes of whole samples, each holding at most _MAX_PAIRS_PER_PASS (pred, gt) pairs
    pairs = np.cumsum(np.minimum(P, MAX_MATCHED_BOXES) * np.minimum(G, MAX_MATCHED_BOXES))
    out = np.empty(B)
    start = 0
    while start < B:
        done = pairs[start - 1] if start else 0
        end = max(start + 1, int(np.searchsorted(pairs, done + _MAX_PAIRS_PER_PASS, side="right")))
        with np.errstate(all="ignore"):  # absurd coordinates overflow to inf/NaN; handled explicitly
            out[start:end] = _batch_pass(
                pb[p_off[start] : p_off[end]], P[start:end], gb[g_off[start] : g_off[end]], G[start:end],
                wh[start:end], given[start:end], **kw,
            )
        start = end
    return out


def _segment_starts(counts: np.ndarray) -> np.ndarray:
    return np.cumsum(counts) - counts


def _keep_first(ok: np.ndarray, counts: np.ndarray, limit: int) -> np.ndarray:
    """ok, but only the first `limit` True entries of each segment."""
    if counts.size == 0 or counts.max() <= limit:
        return ok
    seg = np.repeat(np.arange(counts.size), counts)
    c = np.cumsum(ok)
    before = np.concatenate(([0], c))[_segment_starts(counts)]
    return ok & (c - before[seg] <= limit)


def _batch_pass(pb, P, gb, G, wh, given, *, w_l1, w_giou, lambda_fn, lambda_fp, square) -> np.ndarray:
    B = P.size
    p_ok = _keep_first(valid_box_mask(pb), P, MAX_MATCHED_BOXES)
    g_ok = _keep_first(valid_box_mask(gb), G, MAX_MATCHED_BOXES)
    vp, vg = pb[p_ok], gb[g_ok]
    vg_seg = np.repeat(np.arange(B), G)[g_ok]
    nP = np.bincount(np.repeat(np.arange(B), P)[p_ok], minlength=B)
    nG = np.bincount(vg_seg, minlength=B)

    # (W, H): image_size, else the largest GT x2, y2; 1 where not positive
    inferred = np.full((B, 2), -np.inf)
    if not given.all():
        np.maximum.at(inferred, vg_seg, vg[:, 2:4])
    size = _positive_or_one(np.where(given[:, None], wh, inferred))
    norm = 2.0 * np.hypot(size[:, 0], size[:, 1])

    # every (pred, gt) pair of every sample, pred-major within a sample
    n_pairs = nP * nG
    pair_seg = np.repeat(np.arange(B), n_pairs)
    pair_start = _segment_starts(n_pairs)
    k = np.arange(pair_seg.size) - pair_start[pair_seg]
    gi = nG[pair_seg]  # > 0 wherever there is a pair
    pi = k // gi
    l1, giou = _pairwise(vp[_segment_starts(nP)[pair_seg] + pi], vg[_segment_starts(nG)[pair_seg] + k - pi * gi],
                         norm[pair_seg])
    cost = MATCH_W_L1 * np.minimum(l1, L1_COST_CAP) + MATCH_W_GIOU * (1.0 - giou)

    m = np.minimum(nP, nG)
    idx = _match(cost, pair_start, nP, nG)  # sorted: by sample, then pair
    s = _pair_score(l1[idx], giou[idx], w_l1, w_giou)

    # Σ_k s_k: one or two terms add exactly like math.fsum; longer sums use fsum itself
    seg_start = _segment_starts(m)
    base = np.zeros(B)
    has = m > 0
    base[has] = np.add.reduceat(s, seg_start[has]) if s.size else 0.0
    for b in np.flatnonzero(m > 2):
        base[b] = math.fsum(s[seg_start[b] : seg_start[b] + m[b]].tolist())
    base = base / np.maximum(G, 1)
    pen = (lambda_fn * (G - m) + lambda_fp * (P - m)) / np.maximum(1, G)
    r = np.clip(base - pen, 0.0, 1.0)
    if square:
        r = r * r
    r = np.where(np.isfinite(r), r, 0.0)
    return np.where(G == 0, NO_GT_REWARD, r)


@functools.lru_cache(maxsize=None)
def _assignments(p: int, g: int) -> np.ndarray:
    """Every injective assignment between p preds and g gts, as flat pair indices i·g + j [A, min(p, g)]."""
    if p <= g:  # pred i takes gt perm[i]
        perms = np.array(list(itertools.permutations(range(g), p)))
        return np.arange(p) * g + perms
    perms = np.array(list(itertools.permutations(range(p), g)))  # gt j takes pred perm[j]
    return perms * g + np.arange(g)


def _match(cost: np.ndarray, pair_start: np.ndarray, nP: np.ndarray, nG: np.ndarray) -> np.ndarray:
    """Minimum-cost assignment per sample → indices of the matched pairs, sorted.

    A 1×n or n×1 problem takes the first minimum of its pairs (what scipy returns). Samples with
    2 to _ENUM_MAX_N boxes a side are grouped by shape and every injective assignment is
    enumerated in numpy, the first minimum kept: the optimum scipy's Hungarian solver finds,
    without a Python call per sample (tests check the values agree). Larger problems:
    hungarian_match per sample.
    """
    m = np.minimum(nP, nG)
    n_pairs = nP * nG
    matched = []
    one = m == 1  # a 1×n or n×1 matching: the first minimum of the sample's pairs
    if one.any():
        starts = pair_start[n_pairs > 0]
        seg_min = np.repeat(np.minimum.reduceat(cost, starts), n_pairs[n_pairs > 0])
        first = np.minimum.reduceat(np.where(cost == seg_min, np.arange(cost.size), cost.size), starts)
        matched.append(first[one[n_pairs > 0]])
    small = (m >= 2) & (np.maximum(nP, nG) <= _ENUM_MAX_N)
    shape_key = np.where(small, nP * (_ENUM_MAX_N + 1) + nG, -1)
    for key in np.flatnonzero(np.bincount(shape_key[small], minlength=1)):
        p, g = divmod(int(key), _ENUM_MAX_N + 1)
        starts = pair_start[shape_key == key]
        lin = _assignments(p, g)
        blocks = cost[starts[:, None] + np.arange(p * g)]  # [samples, p·g]
        best = blocks[:, lin].sum(axis=2).argmin(axis=1)  # [samples]
        matched.append((starts[:, None] + lin[best]).ravel())
    for b in np.flatnonzero((m >= 2) & ~small):
        o = pair_start[b]
        r, c = hungarian_match(cost[o : o + nP[b] * nG[b]].reshape(nP[b], nG[b]))
        matched.append(o + r * nG[b] + c)
    return np.sort(np.concatenate(matched)) if matched else np.empty(0, dtype=np.int64)


def _pairwise(p: np.ndarray, g: np.ndarray, norm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 7 L1 and GIoU for aligned rows p[k], g[k] (all matchable), normalised by norm[k]."""
    px1, py1, px2, py2 = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
    gx1, gy1, gx2, gy2 = g[:, 0], g[:, 1], g[:, 2], g[:, 3]
    l1 = (np.abs(px1 - gx1) + np.abs(py1 - gy1) + np.abs(px2 - gx2) + np.abs(py2 - gy2)) / norm
    inter, union = iou_terms(p, g)
    c = (np.maximum(px2, gx2) - np.minimum(px1, gx1)) * (np.maximum(py2, gy2) - np.minimum(py1, gy1))
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

    preds, gts = as_boxes(pred), as_boxes(gt)
    P, G = len(preds), len(gts)
    if G == 0:
        return NO_GT_REWARD
    vp = [b for b in preds if b is not None and is_valid_box(b)][:MAX_MATCHED_BOXES]
    vg = [b for b in gts if b is not None and is_valid_box(b)][:MAX_MATCHED_BOXES]
    size = _size_or_none(image_size)
    if size is None:
        size = (max((b[2] for b in vg), default=-math.inf), max((b[3] for b in vg), default=-math.inf))
    norm = float(2.0 * np.hypot(_positive_or_one(size[0]), _positive_or_one(size[1])))

    l1 = np.zeros((len(vp), len(vg)))
    giou = np.zeros((len(vp), len(vg)))
    for i, (px1, py1, px2, py2) in enumerate(vp):
        for j, (gx1, gy1, gx2, gy2) in enumerate(vg):
            with np.errstate(over="ignore", invalid="ignore"):  # absurd coordinates: inf/NaN, fixed below
                d = np.float64(abs(px1 - gx1) + abs(py1 - gy1) + abs(px2 - gx2) + abs(py2 - gy2)) / norm
                inter, union = iou_terms(np.array(vp[i]), np.array(vg[j]))
                c = (max(px2, gx2) - min(px1, gx1)) * (max(py2, gy2) - min(py1, gy1))
                g = inter / union - (np.float64(c) - union) / c
            l1[i, j] = math.inf if math.isnan(d) else d
            giou[i, j] = -1.0 if math.isnan(g) else g
    cost = MATCH_W_L1 * np.minimum(l1, L1_COST_CAP) + MATCH_W_GIOU * (1.0 - giou)
    rows, cols = hungarian_match(cost)
    scores = [float(_pair_score(l1[i, j], giou[i, j], w_l1, w_giou)) for i, j in zip(rows, cols)]
    m = len(rows)
    pen = (lambda_fn * (G - m) + lambda_fp * (P - m)) / max(1, G)
    r = min(1.0, max(0.0, math.fsum(scores) / G - pen))
    if square:
        r = r * r
    return r if math.isfinite(r) else 0.0
