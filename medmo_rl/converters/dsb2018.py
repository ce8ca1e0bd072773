"""2018 Data Science Bowl nuclei (stage1_train layout) → `grounding` samples, one per image.

Input: <src>/stage1_train/<ImageId>/images/<ImageId>.png and .../masks/*.png, one binary mask
per nucleus (<src> may also be the stage1_train/ folder itself).
Each mask becomes one box, its extent in continuous pixel edges:
    x1 = min column, y1 = min row, x2 = max column + 1, y2 = max row + 1
so a one-pixel nucleus at (c, r) is (c, r, c+1, r+1). Labels are all "nucleus".

A mask that is not binary (more than one non-zero value, or not single-channel), is empty,
or has a different size than its image is dropped and reported; the image keeps its other
nuclei. An image that is missing/unreadable, or has no usable mask, is rejected whole.
Counts: images, masks, boxes.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np

from medmo_rl.converters.common import ConversionReport, collect, grounding_answer, read_image_size
from medmo_rl.schema import Sample

SOURCE = "dsb2018"
LABEL = "nucleus"
PROMPT = "Locate every cell nucleus in this microscopy image."


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """Extent of the non-zero pixels of a 2-D mask as (x1, y1, x2, y2) edges; None if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))


def mask_problem(mask: np.ndarray) -> str | None:
    """Why `mask` is not a binary single-channel instance mask, or None."""
    if mask.ndim != 2:
        return f"not single-channel (shape {mask.shape})"
    values = np.unique(mask)
    nonzero = values[values != 0]
    if nonzero.size > 1:
        shown = ", ".join(str(v) for v in values[:6]) + (", ..." if values.size > 6 else "")
        return f"not binary: {values.size} distinct values ({shown})"
    return None


def _root(src_dir: str | os.PathLike) -> Path:
    root = Path(src_dir).resolve()
    return root / "stage1_train" if (root / "stage1_train").is_dir() else root


def iter_samples(src_dir: str | os.PathLike, report: ConversionReport) -> Iterator[Sample]:
    root = _root(src_dir)
    image_dirs = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not image_dirs:
        report.reject(str(root), "file_missing", "no <ImageId>/ folders")
    for image_dir in image_dirs:
        report.counts["images"] += 1
        sample = _convert_one(image_dir, report)
        if sample is not None:
            yield sample


def _convert_one(image_dir: Path, report: ConversionReport) -> Sample | None:
    from PIL import Image, UnidentifiedImageError

    image_id = image_dir.name
    image_path = image_dir / "images" / f"{image_id}.png"
    size, problem = read_image_size(image_path)
    if problem:
        report.reject(image_id, *problem)
        return None
    boxes = []
    for mask_path in sorted((image_dir / "masks").glob("*.png")):
        report.counts["masks"] += 1
        where = f"{image_id}/masks/{mask_path.name}"
        try:
            with Image.open(mask_path) as im:
                mask = np.asarray(im)
        except (OSError, UnidentifiedImageError) as exc:
            report.reject(where, "mask_unreadable", str(exc))
            continue
        why = mask_problem(mask)
        if why:
            report.reject(where, "non_binary_mask", why)
            continue
        if (mask.shape[1], mask.shape[0]) != size:
            report.reject(where, "mask_size_mismatch",
                          f"mask {mask.shape[1]}x{mask.shape[0]}, image {size[0]}x{size[1]}")
            continue
        box = mask_box(mask)
        if box is None:
            report.reject(where, "empty_mask", "no foreground pixel")
            continue
        boxes.append(box)
    if not boxes:
        report.reject(image_id, "no_boxes", "no usable mask")
        return None
    report.counts["boxes"] += len(boxes)
    labels = [LABEL] * len(boxes)
    return report.make_sample(image_id, {
        "id": f"{SOURCE}-{image_id}", "task": "grounding", "prompt": PROMPT,
        "answer": grounding_answer(labels, boxes, size), "images": [str(image_path)],
        "boxes": [list(b) for b in boxes], "labels": labels, "image_size": list(size), "source": SOURCE,
    })


def convert(src_dir: str | os.PathLike) -> ConversionReport:
    return collect(iter_samples, src_dir)
