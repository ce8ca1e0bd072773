"""The composite reward: total = Σ_k w_k · part_k over the four parts MedMO trains with (Fig. 2):

    accuracy   `label_accuracy`            (grounding: fraction of GT labels named)   [0, 1]
    bbox       `bbox_reward` (App. A.1)    grounding only; 0.0 for every other task   [0, 1]
    tag_count  `tag_count` (open-r1)                                                   [0, 1]
    overlong   `soft_overlong_punishment` (DAPO) on num_tokens                        [−1, 0]

with the weights w_accuracy, w_bbox, w_tag_count, w_overlong of `RewardConfig`.
A non-grounding completion has no boxes to judge: its bbox part is reported as 0.0 (a float, so
every part is a number in JSON) and contributes nothing to the total; a consumer averaging the
bbox part should average over grounding items only (the RL loop's `reward/bbox` does).

Boxes are compared in ONE space, absolute pixels of the original image: the completion's
Qwen3-VL 0–1000 boxes go through `medmo_rl.boxes.to_pixels` with the reference's image_size
(the GT is stored in pixels), and bbox_reward gets that image_size as (W, H) — so L1 is
normalised by the true image diagonal rather than by the GT extents App. A.1 falls back to.

Each completion is parsed once (`parse_completion`) and the parsed form handed to every part.
`score_items` scores a batch (one vectorised bbox pass); a failure in one item (e.g. a grounding
reference without image_size) becomes that item's error, never the batch's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from medmo_rl.boxes import to_pixels
from medmo_rl.config import RewardConfig
from medmo_rl.schema import Sample

from rewards.accuracy import label_accuracy
from rewards.bbox import bbox_reward, bbox_reward_batch
from rewards.format import tag_count
from rewards.length import soft_overlong_punishment
from rewards.parsing import ParsedCompletion, as_reference, parse_completion

PARTS = ("accuracy", "bbox", "tag_count", "overlong")  # the keys of ScoreResult.parts; the RL loop logs reward/<part>


@dataclass(frozen=True)
class ScoreItem:
    completion: str  # the generated text, reasoning and answer
    num_tokens: int  # completion length in tokens (for the overlong part)
    reference: Sample  # the record the prompt came from (boxes in absolute pixels)


@dataclass(frozen=True)
class ScoreResult:
    total: float  # Σ w·part; NaN when error is set
    parts: dict[str, float] = field(default_factory=dict)  # PARTS → value; empty when error is set
    error: str | None = None  # why this item could not be scored


def _failed(reason: str) -> ScoreResult:
    return ScoreResult(total=math.nan, parts={}, error=reason)


def _pred_boxes_px(parsed: ParsedCompletion, ref: Sample) -> list[tuple[float, ...]]:
    if ref.image_size is None:
        raise ValueError("a grounding reference needs image_size to place the predicted boxes")
    return [to_pixels(b, ref.image_size) for b in parsed.boxes.boxes]


def _other_parts(parsed: ParsedCompletion, item: ScoreItem, config: RewardConfig) -> dict[str, float]:
    return {
        "accuracy": label_accuracy(parsed, item.reference),
        "bbox": 0.0,  # filled in for grounding items by the batch pass
        "tag_count": tag_count(parsed.text),
        "overlong": soft_overlong_punishment(
            item.num_tokens, config.max_completion_tokens, config.overlong_cache_tokens
        ),
    }


def _total(parts: dict[str, float], config: RewardConfig) -> float:
    return (
        config.w_accuracy * parts["accuracy"]
        + config.w_bbox * parts["bbox"]
        + config.w_tag_count * parts["tag_count"]
        + config.w_overlong * parts["overlong"]
    )


def score_items(items: Sequence[ScoreItem], config: RewardConfig) -> list[ScoreResult]:
    """Score a batch; results in input order, a failed item carries NaN and its error."""
    parts: list[dict[str, float] | None] = []
    errors: list[str | None] = []
    boxes: dict[int, tuple[list, list, tuple[int, int] | None]] = {}
    for i, item in enumerate(items):
        try:
            parsed = parse_completion(item.completion)
            p = _other_parts(parsed, item, config)
            ref = item.reference
            if ref.task == "grounding":
                boxes[i] = (_pred_boxes_px(parsed, ref), [list(b) for b in ref.boxes], ref.image_size)
            parts.append(p)
            errors.append(None)
        except Exception as exc:  # noqa: BLE001 — one bad item must not fail the batch
            parts.append(None)
            errors.append(f"{type(exc).__name__}: {exc}")

    if boxes:
        b = config.bbox
        kw = dict(w_l1=b.w_l1, w_giou=b.w_giou, lambda_fn=b.lambda_fn, lambda_fp=b.lambda_fp, square=b.square)
        idx = list(boxes)
        try:
            values = bbox_reward_batch([boxes[i][0] for i in idx], [boxes[i][1] for i in idx],
                                       [boxes[i][2] for i in idx], **kw).tolist()
        except Exception:  # noqa: BLE001 — never expected; isolate the culprit item below
            values = [None] * len(idx)
        for i, v in zip(idx, values):
            try:
                parts[i]["bbox"] = v if v is not None else bbox_reward(*boxes[i][:2], image_size=boxes[i][2], **kw)  # type: ignore[index]
            except Exception as exc:  # noqa: BLE001
                parts[i], errors[i] = None, f"bbox: {type(exc).__name__}: {exc}"

    results = []
    for p, err in zip(parts, errors):
        if p is None:
            results.append(_failed(err or "unknown error"))
            continue
        total = _total(p, config)
        results.append(ScoreResult(total, p) if math.isfinite(total) else _failed(f"non-finite total from parts {p}"))
    return results


def score(completion: str, reference: Sample | dict[str, Any], *, num_tokens: int, config: RewardConfig) -> dict[str, Any]:
    """{"total": Σ w·part, "parts": {accuracy, bbox, tag_count, overlong}} for one completion.

    reference: a `Sample` or a dict of record fields; a bad one raises `SampleError` (a ValueError).
    """
    result = score_items([ScoreItem(completion, num_tokens, as_reference(reference))], config)[0]
    if result.error is not None:
        raise ValueError(result.error)
    return {"total": result.total, "parts": dict(result.parts)}
