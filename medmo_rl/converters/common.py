"""What every converter shares: the report of a conversion, record checks, and the writer.

A converter module exposes
    iter_samples(src_dir, report, **options) -> Iterator[Sample]   (streams; fills `report`)
    convert(src_dir, **options) -> ConversionReport                (the same, collected)
Every input that does not become a sample is in `report.rejected` as (file[#record], reason),
and counted under `counts["rejected:<kind>"]` — nothing is dropped silently, and no bad input raises.
Box convention: absolute pixels of the original image, (x1, y1, x2, y2), continuous pixel edges
(a box covering pixel columns 3..5 inclusive is x1=3, x2=6).
"""
from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from medmo_rl.arrow_store import features
from medmo_rl.schema import Sample, SampleError, validate_sample, write_jsonl

Box = tuple[float, float, float, float]


@dataclass
class ConversionReport:
    """samples: converted records; rejected: (file or file#record, "kind: detail");
    counts: what was read (named like the dataset's SOURCE.txt counts), "samples", and
    "rejected:<kind>" per reject kind."""

    samples: list[Sample] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    _seen_ids: set[str] = field(default_factory=set, repr=False)

    def reject(self, where: str, kind: str, detail: str) -> None:
        self.rejected.append((where, f"{kind}: {detail}"))
        self.counts[f"rejected:{kind}"] += 1

    def make_sample(self, where: str, record: dict[str, Any]) -> Sample | None:
        """Validate one record (schema.validate_sample, image files checked); None if rejected."""
        try:
            sample = validate_sample(record, check_files=True)
        except SampleError as exc:
            kind = "image_missing" if "image file not found" in exc.problem else "invalid_record"
            self.reject(where, kind, f"field {exc.field_name!r}: {exc.problem}")
            return None
        if sample.id in self._seen_ids:
            self.reject(where, "duplicate_id", sample.id)
            return None
        self._seen_ids.add(sample.id)
        self.counts["samples"] += 1
        return sample

    def summary(self, max_rejects: int = 5) -> str:
        lines = ["counts: " + ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))]
        if self.rejected:
            lines.append(f"{len(self.rejected)} rejected, first {min(max_rejects, len(self.rejected))}:")
            lines += [f"  {where}: {why}" for where, why in self.rejected[:max_rejects]]
        return "\n".join(lines)


def collect(iter_samples: Callable[..., Iterator[Sample]], src_dir: str | os.PathLike,
            **options: Any) -> ConversionReport:
    report = ConversionReport()
    report.samples.extend(iter_samples(src_dir, report, **options))
    return report


def read_image_size(path: Path) -> tuple[tuple[int, int] | None, tuple[str, str] | None]:
    """((w, h), None) from the image header (no decoding), or (None, (kind, detail)) when the
    image is missing or unreadable."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        return None, ("image_missing", str(path))
    try:
        with Image.open(path) as im:
            return im.size, None
    except (OSError, UnidentifiedImageError) as exc:
        return None, ("image_unreadable", f"{path}: {exc}")


def box_problem(box: Box, size: tuple[int, int]) -> tuple[str, str] | None:
    """(kind, detail) when a pixel box is degenerate or leaves the w×h image, else None."""
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        return "degenerate_box", f"{list(box)} has no area"
    w, h = size
    if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
        return "box_outside_image", f"{list(box)} outside the {w}x{h} image"
    return None


def grounding_answer(labels: Iterable[str], boxes: Iterable[Box], size: tuple[int, int]) -> str:
    """The model-facing target (boxes.py: Qwen3-VL 0–1000 grid), so SFT can train on it as is."""
    from medmo_rl.boxes import format_grounding_answer, to_relative

    return format_grounding_answer(list(labels), [to_relative(b, size) for b in boxes])


# --- writing ---------------------------------------------------------------------------------

def _jsonl_rows(path: str) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def write_dataset(samples: Iterable[Sample], out_dir: str | os.PathLike) -> dict[str, Any]:
    """Stream samples to out_dir/samples.jsonl, then build the HF Arrow copy out_dir/hf/.

    Image paths are written as they are in the samples (converters make them absolute), so
    the outputs stay valid wherever out_dir is. Returns {"n", "jsonl", "hf"}.
    Load back with `schema.load_samples(jsonl)` or `datasets.load_from_disk(hf)`.
    """
    from datasets import Dataset

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "samples.jsonl"
    n = write_jsonl(samples, jsonl)
    hf = out / "hf"
    cache = out / ".hf_cache"
    for stale in (hf, cache):  # an old cache would be reused by fingerprint: never keep one
        shutil.rmtree(stale, ignore_errors=True)
    if n:
        ds = Dataset.from_generator(_jsonl_rows, features=features(), cache_dir=str(cache),
                                    gen_kwargs={"path": str(jsonl)})
    else:  # from_generator cannot build a table without rows
        ds = Dataset.from_dict({k: [] for k in features()}, features=features())
    ds.save_to_disk(str(hf), num_shards=1 if n == 0 else None)  # 0 shards would not load back
    del ds
    shutil.rmtree(cache, ignore_errors=True)
    return {"n": n, "jsonl": jsonl, "hf": hf}


def write_report(report: ConversionReport, path: str | os.PathLike) -> None:
    """counts and every reject as JSON, next to the dataset."""
    Path(path).write_text(json.dumps(
        {"counts": dict(sorted(report.counts.items())),
         "rejected": [{"where": w, "reason": r} for w, r in report.rejected]}, indent=1) + "\n")
