"""Dataset names → JSONL files of unified records.

A name in a config (an SFT mixture, `rl.train_set`, an eval benchmark) is one of:
  synthetic_<part>   the project's own synthetic data: grounding | vqa | caption | report |
                     text_qa | all (train split), or synthetic_eval_<part> (held-out split);
  a path             to a JSONL of unified records (see medmo_rl/schema.py).
"""
from __future__ import annotations

from pathlib import Path

from medmo_rl.config import DataConfig
from medmo_rl.synthetic import generate

SYNTHETIC_PARTS = ("grounding", "vqa", "caption", "report", "text_qa", "all")
EVAL_OFFSET = 10_000_000  # held-out synthetic images use indices no training image uses


def resolve(name: str, data: DataConfig, cache_dir: str | Path, *, progress: bool = False) -> Path:
    """Path of the JSONL behind `name`, generating synthetic data into cache_dir on first use."""
    cache = Path(cache_dir)
    if name.startswith("synthetic_eval_"):
        part = name.removeprefix("synthetic_eval_")
        split, n, start = "eval", data.synthetic_eval, EVAL_OFFSET
    elif name.startswith("synthetic_"):
        part = name.removeprefix("synthetic_")
        split, n, start = "train", data.synthetic_train, 0
    else:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(
                f"dataset {name!r}: not a file and not synthetic_<part> "
                f"(parts: {', '.join(SYNTHETIC_PARTS)})")
        return path
    if part not in SYNTHETIC_PARTS:
        raise ValueError(f"dataset {name!r}: unknown synthetic part {part!r}; allowed: {', '.join(SYNTHETIC_PARTS)}")
    out = cache / f"synthetic-{split}-s{data.seed}-n{n}-px{data.synthetic_image_px}"
    paths = generate(out, n, seed=data.seed, size=data.synthetic_image_px, start=start, progress=progress)
    return paths[part]
