"""The unified sample record (DESIGN.md contract) and its validation.

Every converter writes these fields; every stage reads them:
  id          str, unique within a dataset
  task        "caption" | "vqa" | "report" | "grounding" | "text_qa"
  images      list of image paths (absolute, or relative to the dataset file's folder)
  prompt      the user's question / instruction (no chat markup)
  answer      the reference answer text
  boxes       [[x1, y1, x2, y2], ...] absolute pixels of the ORIGINAL image
  labels      one label per box
  choices     MCQ options (optional, may be empty)
  image_size  [w, h] of the first image in pixels (required when there are boxes)
  source      dataset name

A bad record raises `SampleError` naming the record id, the field and the problem; `load_samples`
counts and reports rejects instead of raising, and never drops one silently (`validate_each` does
the same one record at a time, for streams too big to hold: medmo_rl/arrow_store.py). Pure Python
+ stdlib.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from medmo_rl.boxes import is_valid_box

TASKS = ("caption", "vqa", "report", "grounding", "text_qa")
FIELDS = ("id", "task", "images", "prompt", "answer", "boxes", "labels", "choices", "image_size", "source")


class SampleError(ValueError):
    """A record that breaks the schema: says which record, which field, and what is wrong."""

    def __init__(self, record_id: str, field_name: str, problem: str):
        self.record_id, self.field_name, self.problem = record_id, field_name, problem
        super().__init__(f"record {record_id!r}: field {field_name!r}: {problem}")


@dataclass(frozen=True)
class Sample:
    id: str
    task: str
    prompt: str
    answer: str
    images: tuple[str, ...] = ()
    boxes: tuple[tuple[float, float, float, float], ...] = ()  # absolute px, original image
    labels: tuple[str, ...] = ()  # one per box
    choices: tuple[str, ...] = ()
    image_size: tuple[int, int] | None = None  # (w, h) px of images[0]
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        # spelled out, not dataclasses.asdict: its deep copy was 60 % of converting a dataset to Arrow
        return {"id": self.id, "task": self.task, "prompt": self.prompt, "answer": self.answer,
                "images": list(self.images), "boxes": [list(b) for b in self.boxes], "labels": list(self.labels),
                "choices": list(self.choices), "image_size": list(self.image_size) if self.image_size else None,
                "source": self.source}


def _req_str(d: dict, key: str, rid: str, allow_empty: bool = False) -> str:
    v = d.get(key)
    if not isinstance(v, str):
        raise SampleError(rid, key, f"must be a string, got {type(v).__name__}")
    if not allow_empty and not v.strip():
        raise SampleError(rid, key, "must not be empty")
    return v


def _str_list(d: dict, key: str, rid: str) -> tuple[str, ...]:
    v = d.get(key) or []
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
        raise SampleError(rid, key, "must be a list of strings")
    return tuple(v)


def validate_sample(d: dict[str, Any], *, root: str | os.PathLike | None = None, check_files: bool = True) -> Sample:
    """Check one raw record and return a `Sample`; raise `SampleError` on the first problem.

    root: folder that relative image paths resolve against; the Sample holds the resolved path
    so later stages need not know where the record came from.
    """
    if not isinstance(d, dict):
        raise SampleError("?", "<record>", f"must be a JSON object, got {type(d).__name__}")
    rid = d.get("id")
    if not isinstance(rid, str) or not rid:
        raise SampleError(str(rid), "id", "must be a non-empty string")
    unknown = sorted(set(d) - set(FIELDS))
    if unknown:
        raise SampleError(rid, unknown[0], f"unknown field; allowed: {', '.join(FIELDS)}")
    task = d.get("task")
    if task not in TASKS:
        raise SampleError(rid, "task", f"unknown task {task!r}; allowed: {', '.join(TASKS)}")
    prompt = _req_str(d, "prompt", rid)
    answer = _req_str(d, "answer", rid, allow_empty=(task == "grounding"))
    images = _str_list(d, "images", rid)
    if task != "text_qa" and not images:
        raise SampleError(rid, "images", f"task {task!r} needs at least one image")
    resolved = []
    for p in images:
        path = Path(p) if root is None or os.path.isabs(p) else Path(root) / p
        if check_files and not path.is_file():
            raise SampleError(rid, "images", f"image file not found: {path}")
        resolved.append(str(path))
    labels = _str_list(d, "labels", rid)
    choices = _str_list(d, "choices", rid)

    size = d.get("image_size")
    image_size = None
    if size is not None:
        if (
            not isinstance(size, (list, tuple))
            or len(size) != 2
            or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in size)
        ):
            raise SampleError(rid, "image_size", f"must be [w, h] with positive numbers, got {size!r}")
        image_size = (int(size[0]), int(size[1]))

    raw_boxes = d.get("boxes") or []
    if not isinstance(raw_boxes, (list, tuple)):
        raise SampleError(rid, "boxes", "must be a list of [x1, y1, x2, y2]")
    boxes = []
    for i, b in enumerate(raw_boxes):
        if (
            not isinstance(b, (list, tuple))
            or len(b) != 4
            or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in b)
        ):
            raise SampleError(rid, f"boxes[{i}]", f"must be 4 finite numbers, got {b!r}")
        x1, y1, x2, y2 = (float(c) for c in b)
        if not is_valid_box((x1, y1, x2, y2)):
            raise SampleError(rid, f"boxes[{i}]", f"degenerate box {list(b)} (needs x2 > x1 and y2 > y1)")
        if image_size is None:
            raise SampleError(rid, "image_size", "required when boxes are given")
        w, h = image_size
        if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
            raise SampleError(rid, f"boxes[{i}]", f"box {list(b)} lies outside the {w}x{h} image")
        boxes.append((x1, y1, x2, y2))
    if boxes and len(labels) != len(boxes):
        raise SampleError(rid, "labels", f"{len(labels)} labels for {len(boxes)} boxes")
    if task == "grounding" and not boxes:
        raise SampleError(rid, "boxes", "a grounding record needs at least one box")
    source = d.get("source") or ""
    if not isinstance(source, str):
        raise SampleError(rid, "source", "must be a string")
    return Sample(
        id=rid, task=task, prompt=prompt, answer=answer, images=tuple(resolved), boxes=tuple(boxes),
        labels=labels, choices=choices, image_size=image_size, source=source,
    )


@dataclass
class LoadReport:
    """Samples that passed plus every rejected record (id, reason) — nothing dropped silently."""

    samples: Sequence[Sample] = field(default_factory=list)  # a list, or an arrow_store.ArrowSamples
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (record id, reason)

    def summary(self) -> str:
        s = f"{len(self.samples)} ok, {len(self.rejected)} rejected"
        if self.rejected:
            s += ": " + "; ".join(f"{rid}: {why}" for rid, why in self.rejected[:5])
            if len(self.rejected) > 5:
                s += f"; ... {len(self.rejected) - 5} more"
        return s


def validate_each(records: Iterable[Any], *, root=None, check_files: bool = True) -> Iterator[Sample | tuple[str, str]]:
    """Each record in turn as a Sample, or as (record id, reason) when it is rejected."""
    for n, rec in enumerate(records):
        try:
            yield validate_sample(rec, root=root, check_files=check_files)
        except SampleError as exc:
            rid = exc.record_id if exc.record_id not in ("?", "None") else f"#{n}"
            yield rid, f"field {exc.field_name!r}: {exc.problem}"


def validate_records(records: Iterable[Any], *, root=None, check_files: bool = True) -> LoadReport:
    samples, rejected = [], []
    for got in validate_each(records, root=root, check_files=check_files):
        (samples if isinstance(got, Sample) else rejected).append(got)
    return LoadReport(samples, rejected)


def iter_jsonl(path: str | os.PathLike) -> Iterator[Any]:
    """Yield parsed lines; a line that is not JSON yields a marker dict that fails validation."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                yield {"id": f"{Path(path).name}:{lineno}", "task": "<unparseable JSON: " + str(exc) + ">"}


def load_samples(path: str | os.PathLike, *, check_files: bool = True) -> LoadReport:
    """Load a JSONL file of records; relative image paths resolve against its folder."""
    return validate_records(iter_jsonl(path), root=Path(path).parent, check_files=check_files)


def write_jsonl(samples: Iterable[Sample], path: str | os.PathLike, *, relative_to: str | os.PathLike | None = None) -> int:
    """Write samples as JSONL (atomically); image paths made relative to `relative_to` if given."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for s in samples:
            d = s.to_json()
            if relative_to is not None:
                d["images"] = [os.path.relpath(p, relative_to) for p in d["images"]]
            f.write(json.dumps(d) + "\n")
            n += 1
    os.replace(tmp, path)
    return n
