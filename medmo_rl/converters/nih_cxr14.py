"""NIH ChestX-ray14 radiologist boxes (BBox_List_2017.csv[.gz]) → `grounding` samples, one per image.

Input: <src>/BBox_List_2017.csv.gz (or .csv); images (1024×1024 PNG, not shipped with the
annotations) in a flat folder `images_dir` (default <src>/images).
The header row is malformed — "Image Index,Finding Label,Bbox [x,y,w,h],,," splits the box
name over four columns and adds empty ones — so columns are taken by position:
    image, finding, x, y, w, h   (floats, pixels of the 1024×1024 original; trailing cells ignored)
and the box is (x, y, x + w, y + h). If an image on disk is not 1024×1024 the box is scaled
by (w_img/1024, h_img/1024).
Rows are grouped by image (the CSV is not sorted), so the whole CSV is read first: 984 rows.
An image whose PNG is missing is rejected as image_missing — with the shipped annotations-only
copy that is every image, by design; pass images_dir to get samples.
Counts: rows, boxes, boxes:<finding>, images.
"""
from __future__ import annotations

import csv
import gzip
import io
import math
import os
from pathlib import Path
from typing import Iterator

from medmo_rl.converters.common import (
    ConversionReport,
    box_problem,
    collect,
    grounding_answer,
    read_image_size,
)
from medmo_rl.schema import Sample

SOURCE = "nih_cxr14"
NATIVE_SIZE = 1024  # the coordinate space of BBox_List_2017.csv
HEADER_FIRST_CELL = "Image Index"


def prompt_for(findings: list[str]) -> str:
    names = list(dict.fromkeys(findings))  # unique, first-seen order
    return f"Locate the following findings in this chest X-ray: {', '.join(names)}."


def _open_csv(src: Path) -> io.TextIOBase | None:
    for name in ("BBox_List_2017.csv.gz", "BBox_List_2017.csv"):
        path = src / name
        if path.is_file():
            return gzip.open(path, "rt", encoding="utf-8", newline="") if name.endswith(".gz") else \
                open(path, encoding="utf-8", newline="")
    return None


def read_rows(src: Path, report: ConversionReport) -> dict[str, list[tuple[str, tuple[float, ...], str]]]:
    """image name -> [(finding, (x, y, w, h), where)], in file order; bad rows reported."""
    f = _open_csv(src)
    by_image: dict[str, list] = {}
    if f is None:
        report.reject(str(src), "file_missing", "no BBox_List_2017.csv[.gz]")
        return by_image
    with f:
        try:
            for lineno, row in enumerate(csv.reader(f), 1):
                where = f"BBox_List_2017.csv:{lineno}"
                if lineno == 1 and row and row[0].strip() == HEADER_FIRST_CELL:
                    continue
                if not any(cell.strip() for cell in row):
                    continue
                report.counts["rows"] += 1
                cells = [c.strip() for c in row]
                try:
                    if len(cells) < 6 or any(cells[6:]):
                        raise ValueError(f"expected 6 cells (image, finding, x, y, w, h), got {len(cells)}")
                    xywh = tuple(float(c) for c in cells[2:6])
                    if not all(math.isfinite(v) for v in xywh):
                        raise ValueError("non-finite coordinate")
                except ValueError as exc:
                    report.reject(where, "bad_row", f"{exc}: {row!r}")
                    continue
                by_image.setdefault(cells[0], []).append((cells[1], xywh, where))
        except (OSError, EOFError, csv.Error, UnicodeDecodeError) as exc:  # truncated gzip, bad bytes
            report.reject("BBox_List_2017.csv", "unreadable_file", str(exc))
    return by_image


def iter_samples(src_dir: str | os.PathLike, report: ConversionReport, *,
                 images_dir: str | os.PathLike | None = None) -> Iterator[Sample]:
    src = Path(src_dir).resolve()
    img_root = Path(images_dir).resolve() if images_dir else src / "images"
    for name, rows in read_rows(src, report).items():
        report.counts["images"] += 1
        for finding, _, _ in rows:
            report.counts["boxes"] += 1
            report.counts[f"boxes:{finding}"] += 1
        image_path = img_root / name
        size, problem = read_image_size(image_path)
        if problem:
            kind, detail = problem
            if kind == "image_missing":
                detail += f" ({len(rows)} boxes; an annotations-only copy has no images: pass images_dir)"
            report.reject(name, kind, detail)
            continue
        sx, sy = size[0] / NATIVE_SIZE, size[1] / NATIVE_SIZE
        boxes, labels = [], []
        for finding, (x, y, w, h), where in rows:
            box = (x * sx, y * sy, (x + w) * sx, (y + h) * sy)
            bad = box_problem(box, size)
            if bad:
                report.reject(f"{where} ({name})", bad[0], f"{finding} {bad[1]}")
                continue
            boxes.append(box)
            labels.append(finding)
        if not boxes:
            report.reject(name, "no_boxes", "no usable box")
            continue
        sample = report.make_sample(name, {
            "id": f"{SOURCE}-{Path(name).stem}", "task": "grounding", "prompt": prompt_for(labels),
            "answer": grounding_answer(labels, boxes, size), "images": [str(image_path)],
            "boxes": [list(b) for b in boxes], "labels": labels, "image_size": list(size), "source": SOURCE,
        })
        if sample is not None:
            yield sample


def convert(src_dir: str | os.PathLike, *, images_dir: str | os.PathLike | None = None) -> ConversionReport:
    return collect(iter_samples, src_dir, images_dir=images_dir)
