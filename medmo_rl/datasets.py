"""Dataset names → JSONL files of unified records, and their cached Arrow copies.

A name in a config (an SFT mixture, `rl.train_set`, an eval benchmark) is one of:
  synthetic_<part>   the project's own synthetic data: grounding | vqa | caption | report |
                     text_qa | all (train split), or synthetic_eval_<part> (held-out split);
  a path             to a JSONL of unified records (see medmo_rl/schema.py), or to a folder
                     `arrow_store.to_arrow` made.

The training stages read `open_dataset(name)`: the JSONL converted once into cache_dir/arrow/
(validated on the way, rejects stored in its report) and memory-mapped (docs/datasets.md).
"""
from __future__ import annotations

from pathlib import Path

from medmo_rl.arrow_store import is_arrow_dir, open_arrow, to_arrow
from medmo_rl.config import DataConfig
from medmo_rl.schema import LoadReport
from medmo_rl.synthetic import generate

SYNTHETIC_PARTS = ("grounding", "vqa", "caption", "report", "text_qa", "all")
EVAL_OFFSET = 10_000_000  # held-out synthetic images use indices no training image uses


def resolve(name: str, data: DataConfig, cache_dir: str | Path, *, progress: bool = False) -> Path:
    """Path of the JSONL (or Arrow folder) behind `name`, generating synthetic data into cache_dir on first use."""
    cache = Path(cache_dir)
    if name.startswith("synthetic_eval_"):
        part = name.removeprefix("synthetic_eval_")
        split, n, start = "eval", data.synthetic_eval, EVAL_OFFSET
    elif name.startswith("synthetic_"):
        part = name.removeprefix("synthetic_")
        split, n, start = "train", data.synthetic_train, 0
    else:
        path = Path(name)
        if not path.is_file() and not is_arrow_dir(path):
            raise FileNotFoundError(
                f"dataset {name!r}: not a file, not an Arrow folder and not synthetic_<part> "
                f"(parts: {', '.join(SYNTHETIC_PARTS)})")
        return path
    if part not in SYNTHETIC_PARTS:
        raise ValueError(f"dataset {name!r}: unknown synthetic part {part!r}; allowed: {', '.join(SYNTHETIC_PARTS)}")
    order = "" if data.synthetic_box_order == "reading" else f"-{data.synthetic_box_order}"
    out = cache / f"synthetic-{split}-s{data.seed}-n{n}-px{data.synthetic_image_px}{order}"
    paths = generate(out, n, seed=data.seed, size=data.synthetic_image_px, start=start, progress=progress,
                     box_order=data.synthetic_box_order)
    return paths[part]


def resolve_arrow(name: str, data: DataConfig, cache_dir: str | Path, *, progress: bool = False) -> Path:
    """The Arrow folder behind `name`: resolve()'s JSONL converted (once) into cache_dir/arrow."""
    src = resolve(name, data, cache_dir, progress=progress)
    return src.resolve() if is_arrow_dir(src) else to_arrow(src, Path(cache_dir) / "arrow")


def open_dataset(name: str, data: DataConfig, cache_dir: str | Path, *, progress: bool = False) -> LoadReport:
    """`name`'s records, memory-mapped (an ArrowSamples), with the rejects of its conversion."""
    return open_arrow(resolve_arrow(name, data, cache_dir, progress=progress))
