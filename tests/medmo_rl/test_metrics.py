import contextlib
import io
import itertools
import math
import random

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from rouge_score.rouge_scorer import RougeScorer

from medmo_rl import metrics as M

# --- QA / VQA --------------------------------------------------------------------------------


def test_token_recall_and_open_recall():
    # ref tokens [left, lower, lobe]; pred tokens [opacity, in, left, lobe] -> 2 of 3 found
    assert M.token_recall("Opacity in the left lobe", "left lower lobe") == pytest.approx(2 / 3)
    # multiset: ref [no, no] vs pred [no] -> 1/2
    assert M.token_recall("no", "no no") == 0.5
    assert M.open_recall(["left lobe", "heart"], ["left lower lobe", "heart"]) == pytest.approx((2 / 3 + 1) / 2)


def test_open_metrics_split_punctuation_like_the_reward():
    # answers.normalize_answer: "X-ray" -> "x ray" (SQuAD's deletion would give "xray": recall 0, no match)
    assert M.token_recall("X-ray", "x ray") == 1.0
    # ref [x, ray, of, chest], pred [chest, x, ray]: 3 of 4 (SQuAD's [chest, xray]: 1 of 4)
    assert M.token_recall("chest x-ray", "x ray of the chest") == pytest.approx(3 / 4)
    assert M.exact_match_rate(["X-ray"], ["x ray"]) == 1.0


def test_exact_match_rate():
    assert M.exact_match_rate(["The liver.", "kidney", "Left"], ["liver", "kidneys", "left"]) == pytest.approx(2 / 3)


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        M.open_recall(["a", "b"], ["a"])


# --- grounding -------------------------------------------------------------------------------


def _brute_force_min(cost):
    """min over every injective matching of min(P, G) pairs, by enumeration."""
    P, G = cost.shape
    if P <= G:
        return min(sum(cost[i, j] for i, j in zip(range(P), perm)) for perm in itertools.permutations(range(G), P))
    return min(sum(cost[i, j] for i, j in zip(perm, range(G))) for perm in itertools.permutations(range(P), G))


@pytest.mark.parametrize("seed", range(4))
def test_hungarian_match_is_the_minimum_over_all_matchings(seed):
    rng = np.random.default_rng(seed)
    for P, G in [(1, 1), (2, 3), (3, 2), (4, 4), (5, 3), (1, 5)]:
        cost = rng.integers(0, 4, (P, G)).astype(float) if seed % 2 else rng.uniform(0, 1, (P, G))  # ints: ties
        rows, cols = M.hungarian_match(cost)
        assert len(rows) == min(P, G) and len(set(rows)) == len(rows) and len(set(cols)) == len(cols)
        assert list(rows) == sorted(rows)
        assert cost[rows, cols].sum() == pytest.approx(_brute_force_min(cost), abs=1e-12)


def test_matched_iou_hungarian_hand_computed():
    gts = [(0, 0, 10, 10), (20, 20, 30, 30)]
    preds = [(20, 20, 30, 30), (0, 0, 10, 5)]  # exact hit on gt1; half of gt0 (50 / 100)
    assert M.matched_iou(preds, gts) == pytest.approx((1.0 + 0.5) / 2)
    # a third, unmatched GT box counts 0: (1 + 0.5 + 0) / 3
    assert M.matched_iou(preds, gts + [(50, 50, 60, 60)]) == pytest.approx(0.5)
    # IoU(p0,g0) = 70/130 = .54, IoU(p0,g1) = 60/140 = .43, IoU(p1,g0) = 1, IoU(p1,g1) = 30/170 = .18:
    # greedy in prediction order takes p0-g0 + p1-g1 = .71; Hungarian p0-g1 + p1-g0 = 1.43
    g = [(0, 0, 10, 10), (7, 0, 17, 10)]
    p = [(3, 0, 13, 10), (0, 0, 10, 10)]
    assert M.matched_iou(p, g) == pytest.approx((60 / 140 + 1.0) / 2)
    assert M.matched_iou([], gts) == 0.0 and M.matched_iou([], []) == 1.0 and M.matched_iou(preds, []) == 0.0
    assert M.mean_iou([preds, []], [gts, [(0, 0, 1, 1)]]) == pytest.approx((0.75 + 0.0) / 2)


def test_map50_hand_computed():
    # one image, class "c", 2 GT; detections by score: 0.9 TP, 0.8 FP, 0.7 TP
    # recall    [0.5, 0.5, 1.0]; precision [1, 1/2, 2/3] -> interpolated [1, 2/3, 2/3]
    # 101 recall points: r in {0..0.50} (51 points) -> 1; r in {0.51..1} (50 points) -> 2/3
    gts = [[(0, 0, 10, 10), (20, 20, 30, 30)]]
    preds = [[(0, 0, 10, 9), (50, 50, 60, 60), (20, 20, 30, 31)]]
    ap = (51 * 1.0 + 50 * 2 / 3) / 101
    assert M.map50(preds, [["c"] * 3], gts, [["c", "c"]], [[0.9, 0.8, 0.7]]) == pytest.approx(ap)
    # second class "d" with one GT never detected: AP_d = 0 -> mAP = ap / 2
    assert M.map50(preds, [["c"] * 3], [gts[0] + [(0, 0, 5, 5)]], [["c", "c", "d"]],
                   [[0.9, 0.8, 0.7]]) == pytest.approx(ap / 2)
    # IoU 0.45 < 0.5 is a miss: (0,0,10,10) vs (0,0,10,4.5)
    assert M.map50([[(0, 0, 10, 4.5)]], [["c"]], [[(0, 0, 10, 10)]], [["c"]]) == 0.0


def _coco_map50(pred_boxes, pred_labels, pred_scores, gt_boxes, gt_labels, cats):
    def xywh(b):
        return [b[0], b[1], b[2] - b[0], b[3] - b[1]]

    gt = COCO()
    anns = [dict(id=k + 1, image_id=i + 1, category_id=cats.index(lab) + 1, bbox=xywh(b),
                 area=(b[2] - b[0]) * (b[3] - b[1]), iscrowd=0)
            for k, (i, b, lab) in enumerate((i, b, lab) for i, (bs, ls) in enumerate(zip(gt_boxes, gt_labels))
                                            for b, lab in zip(bs, ls))]
    gt.dataset = dict(images=[dict(id=i + 1) for i in range(len(gt_boxes))], annotations=anns,
                      categories=[dict(id=k + 1, name=c) for k, c in enumerate(cats)])
    dets = [dict(image_id=i + 1, category_id=cats.index(lab) + 1, bbox=xywh(b), score=s)
            for i, (bs, ls, ss) in enumerate(zip(pred_boxes, pred_labels, pred_scores))
            for b, lab, s in zip(bs, ls, ss)]
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.params.iouThrs = np.array([0.5])
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][0, :, :, 0, -1]  # [recall point, category] at maxDets=100
    return float(np.mean(precision[precision > -1]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map50_matches_pycocotools(seed):
    rng = np.random.default_rng(seed)
    cats = ["mass", "nodule", "effusion"]
    gt_boxes, gt_labels, pred_boxes, pred_labels, pred_scores = [], [], [], [], []
    for _ in range(6):
        n = int(rng.integers(1, 6))
        xy, wh = rng.uniform(0, 80, (n, 2)), rng.uniform(8, 30, (n, 2))
        g = [(float(x), float(y), float(x + w), float(y + h)) for (x, y), (w, h) in zip(xy, wh)]
        labs = [cats[k] for k in rng.integers(0, 3, n)]
        preds, plabs = [], []
        for j in range(int(rng.integers(0, 8))):
            if j < n and rng.random() < 0.7:  # a jittered true box, mostly with the right label
                preds.append(tuple(float(c) for c in np.asarray(g[j]) + rng.normal(0, 1.5, 4)))
                plabs.append(labs[j] if rng.random() < 0.8 else cats[int(rng.integers(0, 3))])
            else:
                x, y = rng.uniform(0, 80, 2)
                preds.append((float(x), float(y), float(x + 20), float(y + 15)))
                plabs.append(cats[int(rng.integers(0, 3))])
        gt_boxes.append(g)
        gt_labels.append(labs)
        pred_boxes.append(preds)
        pred_labels.append(plabs)
        pred_scores.append([round(float(s), 1) for s in rng.uniform(0, 1, len(preds))])  # ties on purpose
    ours = M.map50(pred_boxes, pred_labels, gt_boxes, gt_labels, pred_scores)
    reference = _coco_map50(pred_boxes, pred_labels, pred_scores, gt_boxes, gt_labels, cats)
    assert ours == pytest.approx(reference, abs=1e-12)
    assert ours > 0.1  # the test data must exercise real matches


# --- report generation -----------------------------------------------------------------------


def test_rouge_l_hand_computed():
    # candidate [a b c d], reference [a c e]: LCS "a c" = 2; P = 2/4, R = 2/3
    # F(beta=1.2) = 2.44 * 0.5 * (2/3) / (2/3 + 1.44 * 0.5) = 0.81333 / 1.38667 = 0.586538...
    p, r = 0.5, 2 / 3
    assert M.rouge_l(["a b c d"], ["a c e"]) == pytest.approx(2.44 * p * r / (r + 1.44 * p))
    assert M.rouge_l(["a b c d"], ["a c e"], beta=1.0) == pytest.approx(2 * p * r / (p + r))
    # several references: P and R are maxima over them: ref2 "a b" gives P = 2/4, R = 1 -> with ref1's
    # R = 2/3 the max R is 1 and max P 1/2: F = 2.44 * 0.5 / (1 + 0.72) = 0.709302...
    assert M.rouge_l(["a b c d"], [["a c e", "a b"]]) == pytest.approx(2.44 * 0.5 / 1.72)
    # punctuation and case do not count
    assert M.rouge_l(["No effusion."], ["no effusion"]) == pytest.approx(1.0)


def test_bleu_hand_computed():
    # candidate [a b c d] vs reference [a b c e]: p1 = 3/4, p2 = 2/3 (ab, bc), p3 = 1/2 (abc), p4 = 0/1
    b = M.bleu(["a b c d"], ["a b c e"])
    assert b[0] == pytest.approx(0.75)
    assert b[1] == pytest.approx(math.sqrt(0.75 * 2 / 3))
    assert b[2] == pytest.approx((0.75 * 2 / 3 * 0.5) ** (1 / 3))
    assert b[3] == 0.0
    # brevity: candidate [a b] vs reference [a b c d]: p1 = p2 = 1, BP = exp(1 - 4/2) = e^-1
    assert M.bleu(["a b"], ["a b c d"], max_n=2) == pytest.approx([math.exp(-1), math.exp(-1)])
    # corpus-level, closest reference length: refs of 3 and 6 tokens for a 4-token candidate -> R = 3
    assert M.bleu(["a b c d"], [["a b c", "a b c d e f"]], max_n=1) == pytest.approx([1.0])


def test_cider_d_hand_computed():
    # two items, candidate == its single reference, no n-gram shared across items:
    # every weight is tf * (log 2 - log 1); for n = 1, 2 the cosine is 1, and n = 3, 4 have no
    # n-grams (0) -> (1 + 1 + 0 + 0) / 4 * 10 = 5 per item
    assert M.cider_d(["a b", "c d"], ["a b", "c d"]) == pytest.approx(5.0)
    # four-token sentences give all four n-gram cosines 1 -> 10
    assert M.cider_d(["a b c d", "e f g h"], ["a b c d", "e f g h"]) == pytest.approx(10.0)
    # one item: log N = log 1 = 0 and df = 1, so every weight is 0 and so is the score
    assert M.cider_d(["a b"], ["a b"]) == 0.0


def _random_corpus(seed):
    rng = random.Random(seed)
    vocab = ("the heart is normal size lungs are clear no effusion pneumothorax mild cardiomegaly "
             "left lower lobe").split()

    def sentence():
        return " ".join(rng.choice(vocab) for _ in range(rng.randint(3, 14)))

    preds = [sentence() for _ in range(12)]
    refs = [[sentence() for _ in range(rng.randint(1, 3))] for _ in range(12)]
    return preds, refs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_report_metrics_match_pycocoevalcap(seed):
    preds, refs = _random_corpus(seed)  # already tokenised: lowercase words, no punctuation
    gts, res = dict(enumerate(refs)), {i: [p] for i, p in enumerate(preds)}
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its internals
        ref_bleu, _ = Bleu(4).compute_score(gts, res)
    ref_cider, _ = Cider().compute_score(gts, res)
    ref_rouge, _ = Rouge().compute_score(gts, res)
    # pycocoevalcap adds 1e-15 / 1e-9 to BLEU's counts: agreement to 1e-5, not exact
    assert M.bleu(preds, refs) == pytest.approx(ref_bleu, abs=1e-5)
    assert M.cider_d(preds, refs) == pytest.approx(ref_cider, abs=1e-9)
    assert M.rouge_l(preds, refs) == pytest.approx(ref_rouge, abs=1e-12)


def test_rouge_l_beta1_matches_rouge_score():
    scorer = RougeScorer(["rougeL"])
    preds, refs = _random_corpus(3)
    for pred, ref in zip(preds, refs):
        assert M.rouge_l([pred], [ref[0]], beta=1.0) == pytest.approx(scorer.score(ref[0], pred)["rougeL"].fmeasure)


# --- model-based hooks -----------------------------------------------------------------------


def test_model_metrics_say_what_they_need_when_skipped():
    rate = M.rate_score(["a"], ["a"])
    semb = M.semb_score(["a"], ["a"])
    assert isinstance(rate, M.Skipped) and rate.reason.startswith("skipped: needs") and "scorer=" in rate.reason
    assert isinstance(semb, M.Skipped) and "CheXbert" in semb.reason and "embed=" in semb.reason
    assert str(rate).startswith("RaTE: skipped")


def test_model_metric_hooks_average_the_supplied_model():
    assert M.rate_score(["a", "b"], ["a", "c"], scorer=lambda p, r: [1.0, 0.5]) == 0.75
    vectors = {"x": [1.0, 0.0], "y": [1.0, 1.0], "z": [0.0, 2.0]}
    # cos(x, y) = 1/sqrt(2); cos(z, z) = 1 -> mean (0.7071 + 1) / 2
    got = M.semb_score(["x", "z"], ["y", "z"], embed=lambda texts: [vectors[t] for t in texts])
    assert got == pytest.approx((1 / math.sqrt(2) + 1) / 2)
