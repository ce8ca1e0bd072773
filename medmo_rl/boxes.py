"""The box convention — the ONE place that knows how boxes look (DESIGN.md rule 3).

Stored (dataset records, rewards' GT): absolute pixels of the ORIGINAL image, XYXY floats.
Model-facing (prompts, targets, completions): Qwen3-VL relative integers on a 0–1000 grid,
    rel = round(1000 · px / size),   px = rel · size / 1000,
so a pixel → 0–1000 → pixel round trip is off by at most size/2000 px (≤ 0.64 px at 1280 px).

Two output forms are parsed:
- MedMO's  ``Fractures <box>[[156, 516, 231, 607], [240, 529, 296, 581]]</box>``
  (several ``label <box>...</box>`` segments may follow each other);
- Qwen3-VL's ```json [{"bbox_2d": [x1, y1, x2, y2], "label": "..."}]``` (fenced or bare).
Malformed output parses to no boxes plus a reason; parsing never raises.

Box geometry lives here too, once, for the reward, the eval and SFT's evaluation:
`valid_box_mask` / `is_valid_box` (which boxes count) and `iou_terms` / `iou_matrix` / `box_iou`.
Pure: numpy only, no torch, no I/O — the reward service imports this.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

Box = tuple[float, float, float, float]

REL_SCALE = 1000  # Qwen3-VL's relative grid


@dataclass(frozen=True)
class ParsedBoxes:
    """What a completion says about boxes.

    boxes:  as written by the model (0–1000 relative for Qwen3-VL), XYXY floats.
    labels: one per box ("" when the model gave none).
    fmt:    "medmo" | "qwen_json" | "none".
    reason: why nothing (or not everything) was parsed; None when clean.
    """

    boxes: tuple[Box, ...]
    labels: tuple[str, ...]
    fmt: str
    reason: str | None = None


def to_relative(box_px: Sequence[float], image_size: Sequence[float]) -> tuple[int, int, int, int]:
    """Absolute pixels → Qwen3-VL 0–1000 integers, clamped to the grid: rel = round(1000·px/size)."""
    w, h = float(image_size[0]), float(image_size[1])
    if not (w > 0 and h > 0):
        raise ValueError(f"image_size must be positive, got {tuple(image_size)}")
    sizes = (w, h, w, h)
    return tuple(  # type: ignore[return-value]
        min(REL_SCALE, max(0, int(round(REL_SCALE * float(c) / s)))) for c, s in zip(box_px, sizes)
    )


def to_pixels(box_rel: Sequence[float], image_size: Sequence[float]) -> Box:
    """Qwen3-VL 0–1000 → absolute pixels: px = rel·size/1000."""
    w, h = float(image_size[0]), float(image_size[1])
    x1, y1, x2, y2 = box_rel
    return (float(x1) * w / REL_SCALE, float(y1) * h / REL_SCALE, float(x2) * w / REL_SCALE, float(y2) * h / REL_SCALE)


def format_boxes(label: str, boxes_rel: Sequence[Sequence[int]]) -> str:
    """MedMO's answer form: ``label <box>[[x1, y1, x2, y2], ...]</box>`` (relative ints)."""
    inner = ", ".join("[" + ", ".join(str(int(c)) for c in b) + "]" for b in boxes_rel)
    return f"{label} <box>[{inner}]</box>"


def format_grounding_answer(labels: Sequence[str], boxes_rel: Sequence[Sequence[int]]) -> str:
    """Group boxes by label (first-seen order) into MedMO segments joined by '; '."""
    order: list[str] = []
    groups: dict[str, list[Sequence[int]]] = {}
    for lab, box in zip(labels, boxes_rel):
        if lab not in groups:
            order.append(lab)
            groups[lab] = []
        groups[lab].append(box)
    return "; ".join(format_boxes(lab, groups[lab]) for lab in order)


_MEDMO_SEG = re.compile(r"([^<>;\n]*?)\s*<box>(.*?)</box>", re.S)
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)
_NUM = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf(?:inity)?|nan", re.I)
_QUAD = re.compile(r"\[([^\[\]]*)\]")


def _as_box(value: object) -> Box | None:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    out = []
    for c in value:
        if isinstance(c, bool) or not isinstance(c, (int, float)):
            return None
        out.append(float(c))
    return tuple(out)  # type: ignore[return-value]


def _parse_medmo(text: str) -> ParsedBoxes | None:
    if "<box>" not in text:  # the common non-grounding answer: skip the segment scan
        return None
    segments = _MEDMO_SEG.findall(text)
    if not segments:
        return None
    boxes: list[Box] = []
    labels: list[str] = []
    problems: list[str] = []
    for raw_label, body in segments:
        label = raw_label.strip().strip(":,").strip()
        quads = _QUAD.findall(body)
        if not quads:
            problems.append(f"empty or malformed <box> body {body[:40]!r}")
        for quad in quads:
            nums = _NUM.findall(quad)
            try:  # every match is a float literal; 4 of them make a box
                box = tuple(map(float, nums)) if len(nums) == 4 else None
            except ValueError:
                box = None
            if box is None:
                problems.append(f"box {quad[:40]!r} does not have 4 numbers")
                continue
            boxes.append(box)
            labels.append(label)
    return ParsedBoxes(tuple(boxes), tuple(labels), "medmo", "; ".join(problems) or None)


def _parse_qwen_json(text: str) -> ParsedBoxes | None:
    fenced = _FENCE.findall(text)
    candidates = fenced if fenced else []
    if not candidates:
        start, end = text.find("["), text.rfind("]")
        if "bbox_2d" not in text or start < 0 or end <= start:
            return None
        candidates = [text[start : end + 1]]
    if "bbox_2d" not in "".join(candidates):
        return None
    boxes: list[Box] = []
    labels: list[str] = []
    problems: list[str] = []
    for chunk in candidates:
        try:
            data = json.loads(chunk)
        except (json.JSONDecodeError, RecursionError) as exc:
            problems.append(f"invalid JSON: {exc.__class__.__name__}")
            continue
        items = data if isinstance(data, list) else [data]
        for item in items:
            if not isinstance(item, dict) or "bbox_2d" not in item:
                problems.append("JSON item without bbox_2d")
                continue
            box = _as_box(item["bbox_2d"])
            if box is None:
                problems.append(f"bbox_2d {str(item['bbox_2d'])[:40]!r} is not 4 numbers")
                continue
            boxes.append(box)
            label = item.get("label", "")
            labels.append(label if isinstance(label, str) else str(label))
    return ParsedBoxes(tuple(boxes), tuple(labels), "qwen_json", "; ".join(problems) or None)


def parse_boxes(text: object) -> ParsedBoxes:
    """Parse a completion into boxes (as written, usually 0–1000) and labels. Never raises."""
    if not isinstance(text, str):
        return ParsedBoxes((), (), "none", f"completion is {type(text).__name__}, not str")
    try:
        for parser in (_parse_medmo, _parse_qwen_json):
            parsed = parser(text)
            if parsed is not None and (parsed.boxes or parsed.reason):
                return parsed
    except Exception as exc:  # noqa: BLE001 — a parser bug must not kill the reward service
        return ParsedBoxes((), (), "none", f"parser error: {exc!r}")
    return ParsedBoxes((), (), "none", "no <box>...</box> or bbox_2d found")


def valid_box_mask(boxes: np.ndarray) -> np.ndarray:
    """[n, 4] XYXY → [n] bool, the one validity rule of the project: a box is valid when
        all four coordinates are finite,  x2 > x1,  y2 > y1,  (x2 − x1)·(y2 − y1) finite and > 0.
    The area test catches boxes whose finite sides multiply to 0 (underflow) or inf (overflow).
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    with np.errstate(over="ignore", invalid="ignore"):  # garbage boxes overflow; they come out invalid
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return np.isfinite(b).all(axis=1) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1]) & np.isfinite(area) & (area > 0)


def is_valid_box(box: Sequence[float]) -> bool:
    """`valid_box_mask` of one box of 4 numbers (any other length is invalid)."""
    return len(box) == 4 and bool(valid_box_mask(np.asarray(box, dtype=np.float64))[0])


def iou_terms(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Intersection and union areas of XYXY boxes a, b, elementwise over broadcastable [..., 4]:
        |a ∩ b| = max(min(ax2, bx2) − max(ax1, bx1), 0) · max(min(ay2, by2) − max(ay1, by1), 0)
        |a ∪ b| = |a| + |b| − |a ∩ b|,     |a| = max(ax2 − ax1, 0) · max(ay2 − ay1, 0)
    Continuous coordinates (no +1 pixel). IoU = |a ∩ b| / |a ∪ b|; rewards.bbox builds GIoU on
    these same two terms.
    """
    iw = np.maximum(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0.0)
    ih = np.maximum(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0.0)
    inter = iw * ih
    area_a = np.maximum(a[..., 2] - a[..., 0], 0.0) * np.maximum(a[..., 3] - a[..., 1], 0.0)
    area_b = np.maximum(b[..., 2] - b[..., 0], 0.0) * np.maximum(b[..., 3] - b[..., 1], 0.0)
    return inter, area_a + area_b - inter


def iou_matrix(preds: Sequence[Sequence[float]], gts: Sequence[Sequence[float]]) -> np.ndarray:
    """[P, G] float64: IoU_ij = |p_i ∩ g_j| / |p_i ∪ g_j| (`iou_terms`), 0 where the union is empty."""
    p = np.asarray(preds, dtype=np.float64).reshape(-1, 1, 4)
    g = np.asarray(gts, dtype=np.float64).reshape(1, -1, 4)
    inter, union = iou_terms(p, g)
    return np.divide(inter, union, out=np.zeros_like(union), where=union > 0)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two XYXY boxes: `iou_matrix` of one pair."""
    return float(iou_matrix([a], [b])[0, 0])
