"""MedQA (USMLE, English, 4 options) JSONL → `text_qa` samples with choices.

Input: <src>/*.jsonl in MedQA's release format (the shipped file is the official test split
phrases_no_exclude_test.jsonl), streamed line by line. Each line:
{question, answer (text), options {A, B, C, D}, meta_info (step1 | step2&3), answer_idx, ...}.
Output: prompt = question; choices = option texts in letter order (prompts.user_text lists them
as "A. ..."); answer = "<letter>. <text>", e.g. "B. Tell the attending ...".
A line that is not JSON, lacks the four options, or whose answer text differs from
options[answer_idx] is rejected with file:line.
Counts: questions, meta:<meta_info>.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

from medmo_rl.converters.common import ConversionReport, collect
from medmo_rl.schema import Sample

SOURCE = "medqa"
LETTERS = ("A", "B", "C", "D")


def iter_samples(src_dir: str | os.PathLike, report: ConversionReport, *,
                 filename: str = "phrases_no_exclude_test.jsonl") -> Iterator[Sample]:
    path = Path(src_dir).resolve() / filename
    if not path.is_file():
        report.reject(str(path), "file_missing", filename)
        return
    split = path.stem.rsplit("_", 1)[-1]  # phrases_no_exclude_test -> test
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path.name}:{lineno}"
            report.counts["questions"] += 1
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                report.reject(where, "unparseable_json", str(exc))
                continue
            options = item.get("options") if isinstance(item, dict) else None
            if not isinstance(options, dict) or sorted(options) != list(LETTERS):
                report.reject(where, "invalid_record", f"options must have keys A-D, got {options!r:.80}")
                continue
            letter = item.get("answer_idx")
            if letter not in options:
                report.reject(where, "invalid_record", f"answer_idx {letter!r}")
                continue
            if str(item.get("answer", "")).strip() != str(options[letter]).strip():
                report.reject(where, "answer_mismatch", f"answer {item.get('answer')!r} != option {letter} "
                                                        f"{options[letter]!r}")
                continue
            report.counts[f"meta:{item.get('meta_info')}"] += 1
            sample = report.make_sample(where, {
                "id": f"{SOURCE}-{split}-{lineno:05d}", "task": "text_qa", "prompt": str(item.get("question", "")),
                "answer": f"{letter}. {str(options[letter]).strip()}",
                "choices": [str(options[k]).strip() for k in LETTERS], "source": SOURCE,
            })
            if sample is not None:
                yield sample


def convert(src_dir: str | os.PathLike, *, filename: str = "phrases_no_exclude_test.jsonl") -> ConversionReport:
    return collect(iter_samples, src_dir, filename=filename)
