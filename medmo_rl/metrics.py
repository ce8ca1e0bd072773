"""Evaluation metrics of the MedMO benchmarks (paper Tables 1–3) as pure functions.

  QA / VQA (Table 1):   open_recall, exact_match_rate on `medmo_rl.answers.normalize_answer`,
                        the reward's rule; closed VQA and MCQ are scored by
                        `medmo_rl.answers.label_accuracy`, the reward's accuracy itself
  grounding (Table 3):  matched_iou / mean_iou (Hungarian), map50 (COCO-style AP@0.5), on the
                        IoU of `medmo_rl.boxes`; hungarian_match, the project's one matcher
  reports (Table 2):    rouge_l, bleu, cider_d  (pycocoevalcap 1.2 formulas, no Java);
                        rate_score, semb_score  (need models: hooks that report Skipped)
Strings and numbers in, floats out; no I/O, no torch. numpy + scipy (Hungarian) only.
Corpus metrics take parallel sequences: preds[i] is scored against refs[i], where a reference
item may be one string or a list of strings (several references).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from medmo_rl.answers import normalize_answer
from medmo_rl.boxes import iou_matrix

Box = Sequence[float]  # (x1, y1, x2, y2), any consistent unit
Refs = Sequence["str | Sequence[str]"]

# --- tokens ----------------------------------------------------------------------------------

_CAPTION_TOKEN = re.compile(r"[a-z0-9]+(?:[-'./][a-z0-9]+)*")


def caption_tokens(text: str) -> list[str]:
    """Report-metric tokens: lowercase words, punctuation dropped, inner - ' . / kept
    ("x-ray", "5.2", "t12/l1"). Approximates pycocoevalcap's Java PTBTokenizer + punctuation
    removal; on plain lowercase words (as in the tests) the two agree exactly."""
    return _CAPTION_TOKEN.findall(text.lower())


def _ref_list(ref: "str | Sequence[str]") -> list[str]:
    return [ref] if isinstance(ref, str) else list(ref)


def _check_parallel(preds: Sequence, refs: Sequence) -> None:
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions for {len(refs)} references")
    if not preds:
        raise ValueError("no predictions to score")


# --- QA and VQA ------------------------------------------------------------------------------
# Text is compared after answers.normalize_answer, the reward's rule: lowercase, punctuation →
# SPACE (not deleted as in SQuAD: "x-ray" is the two tokens "x ray"), articles dropped.

def token_recall(pred: str, ref: str) -> float:
    """|tokens(ref) ∩ tokens(pred)| / |tokens(ref)| as multisets, tokens = normalize_answer(·).split()
    (LLaVA-Med's open-question recall; "x-ray" is two tokens). A reference with no token left:
    exact match."""
    ref_tokens = normalize_answer(ref).split()
    if not ref_tokens:
        return float(not normalize_answer(pred))
    common = Counter(ref_tokens) & Counter(normalize_answer(pred).split())
    return sum(common.values()) / len(ref_tokens)


def open_recall(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Open-VQA recall = (1/N) Σ_i token_recall(pred_i, ref_i)."""
    _check_parallel(preds, refs)
    return sum(token_recall(p, r) for p, r in zip(preds, refs)) / len(preds)


def exact_match_rate(preds: Sequence[str], refs: Sequence[str]) -> float:
    """(1/N) Σ_i [normalize_answer(pred_i) == normalize_answer(ref_i)] (answers.normalize_answer)."""
    _check_parallel(preds, refs)
    return sum(normalize_answer(p) == normalize_answer(r) for p, r in zip(preds, refs)) / len(preds)


# --- grounding -------------------------------------------------------------------------------

def hungarian_match(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost one-to-one matching of a [P, G] cost matrix (Kuhn–Munkres, via scipy's
    linear_sum_assignment): rows, cols [min(P, G)] with rows ascending and
        Σ_k cost[rows_k, cols_k] = min over injective matchings of min(P, G) pairs.
    The project's one matcher: matched_pair_ious / matched_iou (so the grounding scorer) and rewards.bbox's
    scipy path."""
    return linear_sum_assignment(np.asarray(cost, dtype=np.float64))


def matched_pair_ious(preds: Sequence[Box], gts: Sequence[Box]) -> list[float]:
    """IoU(p, g) of each pair (p, g) ∈ M, the one-to-one Hungarian matching on 1 − IoU
    (`hungarian_match`); min(|P|, |G|) values, none when either side is empty."""
    if not preds or not gts:
        return []
    ious = iou_matrix(preds, gts)
    rows, cols = hungarian_match(1.0 - ious)
    return [float(v) for v in ious[rows, cols]]


def matched_iou(preds: Sequence[Box], gts: Sequence[Box]) -> float:
    """Mean IoU after one-to-one Hungarian matching (`matched_pair_ious`):
        (1/|G|) Σ_{(p,g) ∈ M} IoU(p, g)
    Unmatched ground-truth boxes count 0; extra predictions are not penalised (they are
    what mAP is for). No ground truth: 1.0 if no prediction either, else 0.0."""
    if not gts:
        return 0.0 if preds else 1.0
    return sum(matched_pair_ious(preds, gts)) / len(gts)


def mean_iou(preds: Sequence[Sequence[Box]], gts: Sequence[Sequence[Box]]) -> float:
    """(1/N) Σ_images matched_iou(preds_i, gts_i) — the grounding IoU of Table 3."""
    _check_parallel(preds, gts)
    return sum(matched_iou(p, g) for p, g in zip(preds, gts)) / len(preds)


_RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCO's recThrs


def _coco_ap(scores: list[float], is_tp: list[bool], n_gt: int) -> float:
    """101-point interpolated AP (pycocotools COCOeval.accumulate) for one category."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    tp = np.cumsum(np.asarray(is_tp, dtype=np.float64)[order])
    fp = np.cumsum(1.0 - np.asarray(is_tp, dtype=np.float64)[order])
    recall = tp / n_gt
    precision = tp / (tp + fp + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # p_interp(r) = max_{r' ≥ r} p(r')
    idx = np.searchsorted(recall, _RECALL_POINTS, side="left")
    return float(np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0).mean())


def map50(pred_boxes: Sequence[Sequence[Box]], pred_labels: Sequence[Sequence[str]],
          gt_boxes: Sequence[Sequence[Box]], gt_labels: Sequence[Sequence[str]],
          pred_scores: Sequence[Sequence[float]] | None = None, *,
          iou_threshold: float = 0.5, max_dets: int = 100) -> float:
    """COCO-style mAP at IoU 0.5 (pycocotools COCOeval, one IoU threshold, area "all"):
    per category c with ground truth, per image, detections sorted by score (stable) and cut to
    max_dets; each in turn takes the unmatched GT box of highest IoU ≥ iou_threshold (TP) or is
    a FP. Over all images: precision/recall at each detection, precision made non-increasing,
    AP_c = (1/101) Σ_{r ∈ {0, .01, …, 1}} p_interp(first recall ≥ r) (0 past the last recall).
        mAP = mean_c AP_c   over categories with at least one GT box.
    Args (one entry per image): boxes XYXY, labels per box, scores per box (None: all 1.0, so
    the model's output order ranks them).
    """
    _check_parallel(pred_boxes, gt_boxes)
    if pred_scores is None:
        pred_scores = [[1.0] * len(b) for b in pred_boxes]
    categories = sorted({lab for labs in gt_labels for lab in labs})
    aps = []
    for cat in categories:
        scores: list[float] = []
        is_tp: list[bool] = []
        n_gt = 0
        for pb, pl, ps, gb, gl in zip(pred_boxes, pred_labels, pred_scores, gt_boxes, gt_labels):
            gts = [b for b, lab in zip(gb, gl) if lab == cat]
            dets = [(s, b) for b, lab, s in zip(pb, pl, ps) if lab == cat]
            n_gt += len(gts)
            order = np.argsort([-s for s, _ in dets], kind="mergesort")[:max_dets]
            ious = iou_matrix([b for _, b in dets], gts)
            taken = [False] * len(gts)
            for k in order:
                s = dets[k][0]
                best, match = min(iou_threshold, 1 - 1e-10), -1
                for g, iou in enumerate(ious[k]):
                    if taken[g] or iou < best:
                        continue
                    best, match = iou, g
                if match >= 0:
                    taken[match] = True
                scores.append(s)
                is_tp.append(match >= 0)
        aps.append(_coco_ap(scores, is_tp, n_gt) if scores else 0.0)
    if not aps:
        raise ValueError("no ground-truth boxes: mAP is undefined")
    return float(np.mean(aps))


# --- report generation -----------------------------------------------------------------------

def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(preds: Sequence[str], refs: Refs, beta: float = 1.2) -> float:
    """ROUGE-L as pycocoevalcap 1.2 (Lin 2004, LCS F-measure), averaged over items:
        P = max_r LCS(c, r)/|c|,  R = max_r LCS(c, r)/|r|,  F = (1 + β²)·P·R / (R + β²·P)
    (0 if P or R is 0), β = 1.2. β = 1 gives rouge-score's rougeL F1 on one reference."""
    _check_parallel(preds, refs)
    total = 0.0
    for pred, ref in zip(preds, refs):
        c = caption_tokens(pred)
        rs = [caption_tokens(r) for r in _ref_list(ref)]
        lcs = [_lcs(r, c) for r in rs]
        p = max((n / len(c) if c else 0.0) for n in lcs)
        r = max((n / len(t) if t else 0.0) for n, t in zip(lcs, rs))
        total += (1 + beta**2) * p * r / (r + beta**2 * p) if p and r else 0.0
    return total / len(preds)


def _ngrams(tokens: Sequence[str], n_max: int) -> Counter:
    return Counter(tuple(tokens[i:i + k]) for k in range(1, n_max + 1) for i in range(len(tokens) - k + 1))


def bleu(preds: Sequence[str], refs: Refs, max_n: int = 4) -> list[float]:
    """Corpus BLEU-1..max_n (Papineni et al. 2002) as pycocoevalcap 1.2 ("closest" ref length):
        p_k = Σ_i Σ_g min(count_i(g), max_r count_r(g)) / Σ_i max(|c_i| − k + 1, 0)   (k-grams g)
        BP  = 1 if C ≥ R else exp(1 − R/C),  C = Σ|c_i|, R = Σ_i |ref closest in length to c_i|
        BLEU-n = BP · (Π_{k≤n} p_k)^(1/n)
    Returns [BLEU-1, ..., BLEU-max_n]; a zero p_k makes BLEU-n (n ≥ k) 0 (pycocoevalcap adds
    1e-15 instead, a difference below 1e-3)."""
    _check_parallel(preds, refs)
    correct, guess = [0] * max_n, [0] * max_n
    c_len = r_len = 0
    for pred, ref in zip(preds, refs):
        c = caption_tokens(pred)
        rs = [caption_tokens(r) for r in _ref_list(ref)]
        max_ref: Counter = Counter()
        for r in rs:
            max_ref |= _ngrams(r, max_n)
        for gram, count in _ngrams(c, max_n).items():
            correct[len(gram) - 1] += min(count, max_ref[gram])
        for k in range(max_n):
            guess[k] += max(len(c) - k, 0)
        c_len += len(c)
        r_len += min((abs(len(r) - len(c)), len(r)) for r in rs)[1]
    if c_len == 0:
        return [0.0] * max_n
    bp = 1.0 if c_len >= r_len else math.exp(1 - r_len / c_len)
    out, log_sum = [], 0.0
    for k in range(max_n):
        if correct[k] == 0:
            out += [0.0] * (max_n - k)
            break
        log_sum += math.log(correct[k] / guess[k])
        out.append(bp * math.exp(log_sum / (k + 1)))
    return out


def cider_d(preds: Sequence[str], refs: Refs, n_max: int = 4, sigma: float = 6.0) -> float:
    """CIDEr-D (Vedantam et al. 2015) as pycocoevalcap 1.2's Cider, over the given corpus:
        g_k(s) = tf(ω, s)·(log N − log max(1, df(ω)))   for the k-grams ω of s; df over the refs
        CIDEr-D_k(c, S) = (1/|S|) Σ_{s∈S} e^{−(l_c − l_s)²/(2σ²)} · Σ_ω min(g_k(c), g_k(s))·g_k(s)
                                                             / (‖g_k(c)‖·‖g_k(s)‖)
        CIDEr-D = (10/N) Σ_i (1/n_max) Σ_k CIDEr-D_k(c_i, S_i)
    N = number of items; l = number of bigrams (tokens − 1), as in pycocoevalcap. The idf is
    corpus-dependent: score a whole test set at once."""
    _check_parallel(preds, refs)
    cands = [_ngrams(caption_tokens(p), n_max) for p in preds]
    ref_sets = [[_ngrams(caption_tokens(r), n_max) for r in _ref_list(ref)] for ref in refs]
    df: Counter = Counter()
    for rs in ref_sets:
        df.update({g for r in rs for g in r})
    log_n = math.log(float(len(preds)))

    def vec(counts: Counter) -> tuple[list[dict], list[float], int]:
        v: list[dict] = [{} for _ in range(n_max)]
        for gram, tf in counts.items():
            v[len(gram) - 1][gram] = tf * (log_n - math.log(max(1.0, df[gram])))
        norms = [math.sqrt(sum(x * x for x in d.values())) for d in v]
        return v, norms, sum(c for g, c in counts.items() if len(g) == 2)

    total = 0.0
    for cand, rs in zip(cands, ref_sets):
        vc, nc, lc = vec(cand)
        score = [0.0] * n_max
        for r in rs:
            vr, nr, lr = vec(r)
            for k in range(n_max):
                val = sum(min(x, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0) for g, x in vc[k].items())
                if nc[k] and nr[k]:
                    val /= nc[k] * nr[k]
                score[k] += val * math.exp(-((lc - lr) ** 2) / (2 * sigma**2))
        total += 10.0 * sum(score) / n_max / len(rs)
    return total / len(preds)


# --- model-based report metrics (hooks) -------------------------------------------------------

@dataclass(frozen=True)
class Skipped:
    """A metric that could not be computed here, and what it needs."""

    metric: str
    reason: str

    def __str__(self) -> str:
        return f"{self.metric}: {self.reason}"


def rate_score(preds: Sequence[str], refs: Sequence[str],
               scorer: Callable[[Sequence[str], Sequence[str]], Sequence[float]] | None = None) -> float | Skipped:
    """RaTEScore (Zhao et al. 2024): entity-level report similarity from a medical NER model and
    entity embeddings. = (1/N) Σ_i scorer(preds, refs)_i. It needs model weights, which a pure
    module does not load: without a scorer this returns Skipped."""
    _check_parallel(preds, refs)
    if scorer is None:
        return Skipped("RaTE", "skipped: needs the RaTEScore models (RaTE-NER-Deberta + BioLORD-2023-C); "
                               "supply a scorer loaded from a local model path via scorer=")
    return float(np.mean(list(scorer(preds, refs))))


def semb_score(preds: Sequence[str], refs: Sequence[str],
               embed: Callable[[Sequence[str]], Sequence[Sequence[float]]] | None = None) -> float | Skipped:
    """SembScore (Endo et al. 2021; Table 2 "Semb"): mean cosine similarity of report embeddings,
        (1/N) Σ_i e(pred_i)·e(ref_i) / (‖e(pred_i)‖‖e(ref_i)‖),   e = CheXbert embedding.
    embed: texts -> vectors; without it this returns Skipped (CheXbert weights needed)."""
    _check_parallel(preds, refs)
    if embed is None:
        return Skipped("Semb", "skipped: needs the CheXbert model (chexbert.pth); supply an embedding "
                               "function loaded from a local model path via embed=")
    a = np.asarray(embed(list(preds)), dtype=np.float64)
    b = np.asarray(embed(list(refs)), dtype=np.float64)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(denom > 0, (a * b).sum(axis=1) / np.where(denom > 0, denom, 1.0), 0.0)
    return float(cos.mean())
