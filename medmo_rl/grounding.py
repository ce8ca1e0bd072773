"""Grounding scored one way for everyone: the eval (`medmo_rl.benchmarks.score_benchmark`) and
SFT's checkpoint evaluation (`sft.evaluate`) both read their numbers from here.

Per image (`score_image`): the completion is parsed ONCE (`answers.parse_completion`: the last
<answer> body, else the text after the reasoning), its 0–1000 boxes are mapped to pixels with the
sample's image_size (`boxes.to_pixels`), and the valid ones kept (`boxes.is_valid_box`). The valid
boxes are matched one-to-one to the G ground-truth boxes by `metrics.hungarian_match` on 1 − IoU
(`metrics.matched_pair_ious`, the project's one matcher); M is the set of matched pairs, P the number of predicted boxes
(valid or not: an invalid box is a wrong prediction). Then

    iou            = (1/G) Σ_{(p, g) ∈ M} IoU(p, g)   unmatched GT boxes count 0 (`metrics.matched_iou`)
    tp50           = |{(p, g) ∈ M : IoU(p, g) ≥ 0.5}|
    parsed         = the answer holds at least one box, valid or not
    label_accuracy = `answers.label_accuracy`, the reward's accuracy part for grounding

Over a benchmark of N images (`summarize`), pooled over boxes where the metric is about boxes:

    mean_iou        = Σ_i Σ_{M_i} IoU / Σ_i G_i          per GT box, 0 where unmatched
    precision50     = Σ tp50 / Σ P      recall50 = Σ tp50 / Σ G      (0 when the denominator is 0)
    f1_50           = 2·precision50·recall50 / (precision50 + recall50)   (0 when both are 0)
    count_acc       = (1/N) Σ_i [P_i = G_i]
    boxes_per_image = (1/N) Σ_i P_i
    parse_rate      = (1/N) Σ_i parsed_i,  label_accuracy = (1/N) Σ_i label_accuracy_i
    map50           = `metrics.map50` on the valid boxes with every label compared after
                      `answers.normalize_answer` (the reward's rule; "Nodule." names class "nodule")
                      and every prediction scored 1.0, so the model's output order ranks them.

Best of G completions of one image (`best_of`, the oracle row of `python -m medmo_rl.headroom`):
the one with the largest image_f1 = 2·tp50 / (P + G) (0 when P + G = 0), ties broken by the larger
Σ_{M} IoU, then by the earlier completion.
Pure: no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from medmo_rl.answers import label_accuracy, normalize_answer, parse_completion
from medmo_rl.boxes import REL_SCALE, Box, is_valid_box, to_pixels
from medmo_rl.metrics import map50, matched_pair_ious
from medmo_rl.schema import Sample


@dataclass(frozen=True)
class ImageGrounding:
    iou: float  # Hungarian-matched IoU with the sample's GT boxes, in [0, 1]
    iou_sum: float  # Σ over matched pairs of their IoU (= iou · G)
    tp50: int  # matched pairs with IoU ≥ 0.5
    n_pred: int  # predicted boxes, valid or not
    n_gt: int  # ground-truth boxes
    parsed: bool  # the answer holds at least one box (valid or not)
    boxes: tuple[Box, ...]  # the valid predicted boxes, absolute pixels of the original image
    labels: tuple[str, ...]  # one per box, as written
    label_accuracy: float  # answers.label_accuracy of the completion, in [0, 1]


@dataclass(frozen=True)
class GroundingMetrics:
    """Benchmark-level grounding metrics; the formulas are in the module docstring."""
    mean_iou: float  # per GT box
    precision50: float
    recall50: float
    f1_50: float
    count_acc: float
    boxes_per_image: float
    map50: float  # COCO-style AP at IoU 0.5, mean over the GT classes
    parse_rate: float
    label_accuracy: float
    n: int  # images scored


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def score_image(sample: Sample, completion: str | None) -> ImageGrounding:
    """One grounding sample against one completion (module docstring); None scores as "" (wrong)."""
    if sample.image_size is None and sample.boxes:
        raise ValueError(f"grounding sample {sample.id!r} has no image_size to place the predicted boxes")
    # an image without GT boxes (the schema then allows no image_size): a predicted box can only be
    # a false positive, and where it lies does not matter, so it stays on the 0–1000 grid
    size = sample.image_size or (REL_SCALE, REL_SCALE)
    parsed = parse_completion(completion or "")
    pixel = [(to_pixels(b, size), lab) for b, lab in zip(parsed.boxes.boxes, parsed.boxes.labels)]
    valid = [(b, lab) for b, lab in pixel if is_valid_box(b)]
    boxes = tuple(b for b, _ in valid)
    gts = list(sample.boxes)
    matched = matched_pair_ious(boxes, gts)
    return ImageGrounding(
        iou=sum(matched) / len(gts) if gts else float(not boxes),  # metrics.matched_iou, from the one matching
        iou_sum=sum(matched),
        tp50=sum(v >= 0.5 for v in matched),
        n_pred=len(parsed.boxes.boxes),
        n_gt=len(gts),
        parsed=bool(parsed.boxes.boxes),
        boxes=boxes,
        labels=tuple(lab for _, lab in valid),
        label_accuracy=label_accuracy(parsed, sample),
    )


def score_images(samples: Sequence[Sample], completions: Sequence[str | None]) -> list[ImageGrounding]:
    """`score_image` per (sample, completion) pair; the two sequences must have one length."""
    return [score_image(s, c) for s, c in zip(samples, completions, strict=True)]


def summarize(samples: Sequence[Sample], scores: Sequence[ImageGrounding]) -> GroundingMetrics:
    """Benchmark-level grounding metrics of `score_images`' records (module docstring)."""
    if not scores or len(samples) != len(scores):
        raise ValueError(f"{len(scores)} scores for {len(samples)} samples: need one per sample, at least one")
    n = len(scores)
    tp, n_pred, n_gt = (sum(getattr(s, k) for s in scores) for k in ("tp50", "n_pred", "n_gt"))
    precision, recall = _ratio(tp, n_pred), _ratio(tp, n_gt)
    return GroundingMetrics(
        mean_iou=_ratio(sum(s.iou_sum for s in scores), n_gt),
        precision50=precision,
        recall50=recall,
        f1_50=_ratio(2 * precision * recall, precision + recall),
        count_acc=sum(s.n_pred == s.n_gt for s in scores) / n,
        boxes_per_image=n_pred / n,
        map50=map50([list(s.boxes) for s in scores], [[normalize_answer(lab) for lab in s.labels] for s in scores],
                    [list(x.boxes) for x in samples], [[normalize_answer(lab) for lab in x.labels] for x in samples]),
        parse_rate=sum(s.parsed for s in scores) / n,
        label_accuracy=sum(s.label_accuracy for s in scores) / n,
        n=n,
    )


def image_f1(g: ImageGrounding) -> float:
    """One image's F1@0.5 = 2·TP / (P + G); 0 when the image has neither predictions nor GT boxes."""
    return 2 * g.tp50 / (g.n_pred + g.n_gt) if g.n_pred + g.n_gt else 0.0


def best_of(samples: Sequence[Sample], completions: Sequence[Sequence[str]]) -> list[str]:
    """Per sample, the completion with the highest image F1@0.5, ties broken by the larger Σ IoU
    (then the earlier slot): the oracle `best-of-G` row."""
    out = []
    for s, comps in zip(samples, completions, strict=True):
        scores = score_images([s] * len(comps), list(comps))
        k = max(range(len(comps)), key=lambda j: (image_f1(scores[j]), scores[j].iou_sum, -j))
        out.append(comps[k])
    return out
