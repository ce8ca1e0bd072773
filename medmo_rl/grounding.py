"""Grounding scored one way for everyone: the eval (`medmo_rl.benchmarks.score_benchmark`) and
SFT's checkpoint evaluation (`sft.evaluate`) both read their numbers from here.

Per image (`score_image`): the completion is parsed ONCE (`answers.parse_completion`: the last
<answer> body, else the text after the reasoning), its 0–1000 boxes are mapped to pixels with the
sample's image_size (`boxes.to_pixels`), and the valid ones kept (`boxes.is_valid_box`). Then

    iou            = (1/G) Σ_{(p, g) ∈ M} IoU(p, g)   M: Hungarian matching on 1 − IoU
                     (`metrics.matched_iou`); unmatched GT boxes count 0, extra predictions nothing
    parsed         = the answer holds at least one box, valid or not
    label_accuracy = `answers.label_accuracy`, the reward's accuracy part for grounding

Over a benchmark (`summarize`): mean_iou and label_accuracy are means over images, parse_rate the
share parsed, map50 is `metrics.map50` on the valid boxes with every label compared after
`answers.normalize_answer` (the reward's rule; "Nodule." names class "nodule") and every
prediction scored 1.0, so the model's output order ranks them.
Pure: no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from medmo_rl.answers import label_accuracy, normalize_answer, parse_completion
from medmo_rl.boxes import REL_SCALE, Box, is_valid_box, to_pixels
from medmo_rl.metrics import map50, matched_iou
from medmo_rl.schema import Sample


@dataclass(frozen=True)
class ImageGrounding:
    iou: float  # Hungarian-matched IoU with the sample's GT boxes, in [0, 1]
    parsed: bool  # the answer holds at least one box (valid or not)
    boxes: tuple[Box, ...]  # the valid predicted boxes, absolute pixels of the original image
    labels: tuple[str, ...]  # one per box, as written
    label_accuracy: float  # answers.label_accuracy of the completion, in [0, 1]


@dataclass(frozen=True)
class GroundingMetrics:
    mean_iou: float  # (1/N) Σ_i iou_i
    map50: float  # COCO-style AP at IoU 0.5, mean over the GT classes
    parse_rate: float  # (1/N) Σ_i parsed_i
    label_accuracy: float  # (1/N) Σ_i label_accuracy_i
    n: int  # images scored


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
    return ImageGrounding(
        iou=matched_iou(boxes, list(sample.boxes)),
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
    return GroundingMetrics(
        mean_iou=sum(s.iou for s in scores) / n,
        map50=map50([list(s.boxes) for s in scores], [[normalize_answer(lab) for lab in s.labels] for s in scores],
                    [list(x.boxes) for x in samples], [[normalize_answer(lab) for lab in x.labels] for x in samples]),
        parse_rate=sum(s.parsed for s in scores) / n,
        label_accuracy=sum(s.label_accuracy for s in scores) / n,
        n=n,
    )
