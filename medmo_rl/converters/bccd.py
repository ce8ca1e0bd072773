"""BCCD blood-smear detection (Pascal VOC XML) → `grounding` samples, one per image.

Input: <src>/BCCD/Annotations/*.xml, <src>/BCCD/JPEGImages/*.jpg, <src>/BCCD/ImageSets/Main/<split>.txt
(<src> may also be the BCCD/ folder itself).

VOC corners are 1-based INCLUSIVE pixel indices: a box with xmin=1, xmax=640 covers every
column of a 640-px image. In our continuous 0-based edge convention that pixel span is
    x1 = xmin - 1,  y1 = ymin - 1,  x2 = xmax,  y2 = ymax
(so width = xmax - xmin + 1, and xmax == width is inside the image).
A box with xmax <= xmin or ymax <= ymin in the XML (BCCD has 2: single points) is degenerate:
it is dropped from its image and reported; the image keeps its other boxes. Boxes leaving the
image are dropped and reported the same way. An image whose XML does not parse, whose JPEG is
missing, or whose XML <size> disagrees with the JPEG is rejected whole.

Counts: xml, boxes (as read), boxes:<label>, boxes_kept.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
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

SOURCE = "bccd"
LABELS = ("RBC", "WBC", "Platelets")
PROMPT = ("Locate every blood cell in this blood smear image. "
          "Label each box as RBC, WBC or Platelets.")
SPLITS = ("all", "train", "val", "test", "trainval")


def voc_to_pixels(xmin: float, ymin: float, xmax: float, ymax: float) -> tuple[float, float, float, float]:
    """1-based inclusive VOC corners → 0-based continuous pixel edges (see module docstring)."""
    return (xmin - 1.0, ymin - 1.0, xmax, ymax)


def _voc_root(src_dir: str | os.PathLike) -> Path:
    root = Path(src_dir).resolve()
    return root / "BCCD" if (root / "BCCD" / "Annotations").is_dir() else root


def _text(node: ET.Element, path: str) -> str:
    found = node.find(path)
    if found is None or found.text is None:
        raise ValueError(f"missing <{path}>")
    return found.text.strip()


def iter_samples(src_dir: str | os.PathLike, report: ConversionReport, *, split: str = "all") -> Iterator[Sample]:
    if split not in SPLITS:
        raise ValueError(f"split {split!r}; allowed: {', '.join(SPLITS)}")
    root = _voc_root(src_dir)
    ann_dir = root / "Annotations"
    if split == "all":
        xml_files = sorted(ann_dir.glob("*.xml"))
    else:
        list_file = root / "ImageSets" / "Main" / f"{split}.txt"
        if not list_file.is_file():
            report.reject(str(list_file), "file_missing", f"no split list for {split!r}")
            return
        stems = [s.strip() for s in list_file.read_text().split() if s.strip()]
        xml_files = [ann_dir / f"{s}.xml" for s in stems]
    if not xml_files:
        report.reject(str(ann_dir), "file_missing", "no VOC XML files")
    for xml_path in xml_files:
        report.counts["xml"] += 1
        sample = _convert_one(xml_path, root, report)
        if sample is not None:
            yield sample


def _convert_one(xml_path: Path, root: Path, report: ConversionReport) -> Sample | None:
    where = xml_path.name
    if not xml_path.is_file():
        report.reject(where, "file_missing", str(xml_path))
        return None
    try:
        ann = ET.parse(xml_path).getroot()
        filename = _text(ann, "filename")
        size_xml = (int(_text(ann, "size/width")), int(_text(ann, "size/height")))
    except (ET.ParseError, ValueError) as exc:
        report.reject(where, "unparseable_xml", str(exc))
        return None
    image_path = root / "JPEGImages" / filename
    size, problem = read_image_size(image_path)
    if problem:
        report.reject(where, *problem)
        return None
    if size != size_xml:
        report.reject(where, "size_mismatch", f"XML says {size_xml}, {filename} is {size}")
        return None
    boxes, labels = [], []
    for k, obj in enumerate(ann.iter("object")):
        obj_where = f"{where}#object{k}"
        report.counts["boxes"] += 1
        try:
            label = _text(obj, "name")
            corners = tuple(float(_text(obj, f"bndbox/{c}")) for c in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError as exc:
            report.reject(obj_where, "invalid_box", str(exc))
            continue
        report.counts[f"boxes:{label}"] += 1
        xmin, ymin, xmax, ymax = corners
        if xmax <= xmin or ymax <= ymin:  # the dataset's own definition (SOURCE.txt)
            report.reject(obj_where, "degenerate_box", f"{label} VOC corners {list(corners)}")
            continue
        box = voc_to_pixels(*corners)
        bad = box_problem(box, size)
        if bad:
            report.reject(obj_where, bad[0], f"{label} {bad[1]}")
            continue
        boxes.append(box)
        labels.append(label)
    if not boxes:
        report.reject(where, "no_boxes", "no usable object boxes")
        return None
    report.counts["boxes_kept"] += len(boxes)
    return report.make_sample(where, {
        "id": f"{SOURCE}-{xml_path.stem}", "task": "grounding", "prompt": PROMPT,
        "answer": grounding_answer(labels, boxes, size), "images": [str(image_path)],
        "boxes": [list(b) for b in boxes], "labels": labels, "image_size": list(size), "source": SOURCE,
    })


def convert(src_dir: str | os.PathLike, *, split: str = "all") -> ConversionReport:
    return collect(iter_samples, src_dir, split=split)
