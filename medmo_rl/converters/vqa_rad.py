"""VQA-RAD (Lau et al. 2018), MEVF split JSON → `vqa` samples.

Input: <src>/data/testset.json (a JSON list of {qid, image_name, image_organ, answer,
answer_type CLOSED|OPEN, question_type, question, phrase_type}) and <src>/data/images/.
Output, one sample per QA:
  id      "vqa_rad-<qid>";  prompt = question;  images = [the image];  image_size from its header
  source  "vqa_rad/closed" | "vqa_rad/open" — the answer type picks the metric at eval time
  closed yes/no questions: answer lowercased, choices ("yes", "no");
  other answers verbatim (whitespace-trimmed), no choices.
Counts: qa, qa:closed, qa:open, images (distinct image files referenced).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

from medmo_rl.converters.common import ConversionReport, collect, read_image_size
from medmo_rl.schema import Sample

SOURCE = "vqa_rad"


def iter_samples(src_dir: str | os.PathLike, report: ConversionReport, *, split: str = "test") -> Iterator[Sample]:
    """split: "test" → data/testset.json, "train" → data/trainset.json (same format)."""
    root = Path(src_dir).resolve() / "data"
    qa_file = root / f"{split}set.json"
    if not qa_file.is_file():
        report.reject(str(qa_file), "file_missing", f"no {qa_file.name} (split {split!r})")
        return
    try:
        items = json.loads(qa_file.read_text(encoding="utf-8"))  # one JSON array: must be read whole
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        report.reject(str(qa_file), "unparseable_json", str(exc))
        return
    if not isinstance(items, list):
        report.reject(str(qa_file), "unparseable_json", "top level is not a list")
        return
    sizes: dict[str, tuple] = {}  # image name -> read_image_size(...)
    for n, item in enumerate(items):
        where = f"{qa_file.name}#{n}"
        report.counts["qa"] += 1
        if not isinstance(item, dict):
            report.reject(where, "invalid_record", "not a JSON object")
            continue
        answer_type = str(item.get("answer_type", "")).strip().lower()
        if answer_type not in ("closed", "open"):
            report.reject(where, "invalid_record", f"answer_type {item.get('answer_type')!r}")
            continue
        report.counts[f"qa:{answer_type}"] += 1
        name = item.get("image_name")
        if not isinstance(name, str) or not name:
            report.reject(where, "invalid_record", "no image_name")
            continue
        path = root / "images" / name
        if name not in sizes:
            sizes[name] = read_image_size(path)
            report.counts["images"] += 1
        size, problem = sizes[name]
        if problem:
            report.reject(where, *problem)
            continue
        answer = str(item.get("answer", "")).strip()
        choices: tuple[str, ...] = ()
        if answer_type == "closed" and answer.lower() in ("yes", "no"):
            answer, choices = answer.lower(), ("yes", "no")
        sample = report.make_sample(where, {
            "id": f"{SOURCE}-{item.get('qid')}", "task": "vqa", "prompt": str(item.get("question", "")),
            "answer": answer, "images": [str(path)], "choices": list(choices),
            "image_size": list(size), "source": f"{SOURCE}/{answer_type}",
        })
        if sample is not None:
            yield sample


def convert(src_dir: str | os.PathLike, *, split: str = "test") -> ConversionReport:
    return collect(iter_samples, src_dir, split=split)
