"""Datasets as memory-mapped HF `datasets` Arrow tables, converted once from JSONL.

    to_arrow(jsonl, cache_dir) → cache_dir/<stem>-<key>/
        data.arrow   the records that passed `schema.validate_sample`, in file order, image paths
                     resolved to absolute ones (`features()`): HF datasets' own Arrow file format,
                     `datasets.Dataset.from_file(path)` reads it
        report.json  {"source", "records", "rejected": [[id, reason], ...]}

key = sha1(absolute source path, size, mtime_ns, check_files, FORMAT): a changed file gets a new folder and is
converted again; an unchanged one is read from the cache. The source is streamed (records are
validated and written in blocks of WRITE_BLOCK), so converting needs memory for one block, not for
the dataset. Record batches hold WRITE_BLOCK rows: opening the table reads one header per batch
(and the kernel maps the pages around it), so few large batches keep what opening costs in
resident memory small — HF's default of 1,000 rows cost 60 MB of RSS per worker at 1M records.
The folder appears by one `rename` once complete: a reader never sees half a table.

`ArrowSamples(folder)` is a Sequence of `Sample`s backed by the memory-mapped table: opening it
costs no copy of the data, record i is decoded when asked for, and it pickles as its folder path,
so worker processes re-open the same file pages rather than receiving the data.

`datasets` is imported inside the functions, so importing this module stays light.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

from medmo_rl.schema import LoadReport, Sample, iter_jsonl, validate_each

FORMAT = "medmo-arrow-v2"  # bump when features() or the layout change: every cache key changes with it
WRITE_BLOCK = 50_000  # records per Arrow record batch (also what conversion holds in memory)
DATA, REPORT = "data.arrow", "report.json"


def features():
    """The unified record (schema.FIELDS) as HF features: the Arrow cache and the converters' hf/ copies."""
    from datasets import Features, List, Value

    return Features({
        "id": Value("string"), "task": Value("string"), "prompt": Value("string"),
        "answer": Value("string"), "images": List(Value("string")),
        "boxes": List(List(Value("float64"))), "labels": List(Value("string")),
        "choices": List(Value("string")), "image_size": List(Value("int64")),
        "source": Value("string"),
    })


def is_arrow_dir(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and (p / REPORT).is_file() and (p / DATA).is_file()


def cache_key(jsonl_path: str | os.PathLike, *, check_files: bool = True) -> str:
    src = Path(jsonl_path).resolve()
    st = src.stat()
    return hashlib.sha1(f"{src}|{st.st_size}|{st.st_mtime_ns}|{check_files}|{FORMAT}".encode()).hexdigest()[:16]


def to_arrow(jsonl_path: str | os.PathLike, cache_dir: str | os.PathLike, *, check_files: bool = True) -> Path:
    """The Arrow folder of `jsonl_path` (see the module docstring), converting it on first use.

    Relative image paths resolve against the JSONL's folder, as `schema.load_samples` does; with
    check_files every image must exist at conversion time (a later loss is the collator's
    missing_image skip).
    """
    src = Path(jsonl_path).resolve()
    out = Path(cache_dir).resolve() / f"{src.stem}-{cache_key(src, check_files=check_files)}"
    if is_arrow_dir(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        n, rejected = _write(src, tmp / DATA, check_files=check_files)
        (tmp / REPORT).write_text(json.dumps({"source": str(src), "records": n, "rejected": rejected}) + "\n")
        os.rename(tmp, out)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not is_arrow_dir(out):  # else another process finished the same conversion first: keep theirs
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write(src: Path, path: Path, *, check_files: bool) -> tuple[int, list[tuple[str, str]]]:
    """Validate src's records into an Arrow file at path; returns (records written, rejects)."""
    from datasets.arrow_writer import ArrowWriter

    feats = features()
    rejected: list[tuple[str, str]] = []
    n, block = 0, []
    with ArrowWriter(features=feats, path=str(path), writer_batch_size=WRITE_BLOCK) as writer:
        for got in validate_each(iter_jsonl(src), root=src.parent, check_files=check_files):
            if isinstance(got, Sample):
                block.append(got.to_json())
            else:
                rejected.append(got)
            if len(block) == WRITE_BLOCK:
                writer.write_batch({k: [r[k] for r in block] for k in feats})
                n, block = n + len(block), []
        if block:
            writer.write_batch({k: [r[k] for r in block] for k in feats})
            n += len(block)
        writer.finalize()
    return n, rejected


def _sample(row: dict[str, Any]) -> Sample:
    size = row["image_size"]
    return Sample(
        id=row["id"], task=row["task"], prompt=row["prompt"], answer=row["answer"], images=tuple(row["images"]),
        boxes=tuple(tuple(b) for b in row["boxes"]), labels=tuple(row["labels"]), choices=tuple(row["choices"]),
        image_size=tuple(size) if size else None, source=row["source"],
    )


class ArrowSamples(Sequence):
    """Sequence[Sample] over the memory-mapped table of a `to_arrow` folder; reads by index."""

    def __init__(self, folder: str | os.PathLike):
        from datasets import Dataset

        self.folder = Path(folder)
        self._rows = Dataset.from_file(str(self.folder / DATA))  # memory-mapped, nothing copied
        self._n = self._rows.num_rows

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> Sample: ...
    @overload
    def __getitem__(self, i: slice) -> list[Sample]: ...

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        i = int(i)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"record {i} of a {self._n}-record dataset ({self.folder})")
        return _sample(self._rows[i])

    def __reduce__(self):
        return ArrowSamples, (str(self.folder),)

    def __repr__(self) -> str:
        return f"ArrowSamples({str(self.folder)!r}, {self._n} records)"


def open_arrow(folder: str | os.PathLike) -> LoadReport:
    """The folder's samples (an ArrowSamples) and the rejects its conversion reported."""
    report = json.loads((Path(folder) / REPORT).read_text())
    return LoadReport(samples=ArrowSamples(folder), rejected=[tuple(r) for r in report["rejected"]])
