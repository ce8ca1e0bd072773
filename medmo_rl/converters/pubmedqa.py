"""PubMedQA PQA-L (expert-labelled) → `text_qa` samples with choices yes / no / maybe.

Input: <src>/data/ori_pqal.json (PMID -> {QUESTION, CONTEXTS, LABELS, final_decision, ...})
and <src>/data/test_ground_truth.json (PMID -> yes|no|maybe: the official 500-item test split).
  split "test": the 500 PMIDs of test_ground_truth.json, answer from that file (and checked
                against final_decision: a disagreement is rejected as label_mismatch);
  split "train": the other 500 (the train/dev pool);  split "all": all 1000.
prompt = "Context:\\n<LABEL>: <context>\\n...\\nQuestion: <QUESTION>\\nAnswer with yes, no or maybe."
(the reasoning-required setting: contexts given, long answer withheld).
Counts: items (in ori_pqal.json), test_items, answer:<label>.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

from medmo_rl.converters.common import ConversionReport, collect
from medmo_rl.schema import Sample

SOURCE = "pubmedqa"
CHOICES = ("yes", "no", "maybe")
SPLITS = ("test", "train", "all")


def _load(path: Path, report: ConversionReport) -> dict | None:
    """Both files are single JSON objects, so they are read whole (1000 items, ~3 MB)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        report.reject(str(path), "file_missing", path.name)
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        report.reject(str(path), "unparseable_json", str(exc))
        return None
    if not isinstance(data, dict):
        report.reject(str(path), "unparseable_json", "top level is not an object")
        return None
    return data


def build_prompt(item: dict) -> str:
    contexts = item.get("CONTEXTS") or []
    labels = item.get("LABELS") or []
    lines = [f"{lab}: {ctx}" if lab else ctx for ctx, lab in zip(contexts, list(labels) + [""] * len(contexts))]
    return "Context:\n" + "\n".join(lines) + f"\nQuestion: {item.get('QUESTION', '')}\nAnswer with yes, no or maybe."


def iter_samples(src_dir: str | os.PathLike, report: ConversionReport, *, split: str = "test") -> Iterator[Sample]:
    if split not in SPLITS:
        raise ValueError(f"split {split!r}; allowed: {', '.join(SPLITS)}")
    data_dir = Path(src_dir).resolve() / "data"
    items = _load(data_dir / "ori_pqal.json", report)
    test = _load(data_dir / "test_ground_truth.json", report)
    if items is None or test is None:
        return
    report.counts["items"] = len(items)
    report.counts["test_items"] = len(test)
    for pmid in test:
        if pmid not in items:
            report.reject(f"test_ground_truth.json#{pmid}", "unknown_pmid", "not in ori_pqal.json")
    for pmid, item in items.items():
        in_test = pmid in test
        if (split == "test" and not in_test) or (split == "train" and in_test):
            continue
        where = f"ori_pqal.json#{pmid}"
        if not isinstance(item, dict):
            report.reject(where, "invalid_record", "not a JSON object")
            continue
        answer = str(test[pmid] if in_test else item.get("final_decision", "")).strip().lower()
        if answer not in CHOICES:
            report.reject(where, "invalid_record", f"answer {answer!r} not in {CHOICES}")
            continue
        if in_test and str(item.get("final_decision", "")).lower() != answer:
            report.reject(where, "label_mismatch", f"test_ground_truth {answer!r} vs final_decision "
                                                   f"{item.get('final_decision')!r}")
            continue
        report.counts[f"answer:{answer}"] += 1
        sample = report.make_sample(where, {
            "id": f"{SOURCE}-{pmid}", "task": "text_qa", "prompt": build_prompt(item), "answer": answer,
            "choices": list(CHOICES), "source": SOURCE,
        })
        if sample is not None:
            yield sample


def convert(src_dir: str | os.PathLike, *, split: str = "test") -> ConversionReport:
    return collect(iter_samples, src_dir, split=split)
