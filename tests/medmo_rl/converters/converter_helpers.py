"""Small writers for the converters' bad-input tests (real files in tmp_path)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, size: tuple[int, int], mode: str = "RGB") -> Path:
    """A small real image file of the given (w, h)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size).save(path)
    return path


def write_mask(path: Path, mask: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8), "L").save(path)
    return path


def rejects_of(report, kind: str) -> list[tuple[str, str]]:
    return [(where, why) for where, why in report.rejected if why.startswith(kind + ":")]
