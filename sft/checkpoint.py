"""The end of an SFT stage: its last checkpoint (medmo_rl/checkpoint.py: HF folder + train_state.pt)
exported as the HF files alone, with the `DONE` marker written last.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from medmo_rl.checkpoint import TRAIN_STATE

DONE = "DONE"


def export_final(ckpt_dir: str | os.PathLike, final_dir: str | os.PathLike) -> Path:
    """Copy the HF files of `ckpt_dir` to `final_dir` (atomically via a temp folder), then write DONE."""
    final = Path(final_dir)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(ckpt_dir, tmp, ignore=shutil.ignore_patterns(TRAIN_STATE))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    (final / DONE).write_text("ok\n")
    return final


def is_done(final_dir: str | os.PathLike) -> bool:
    return (Path(final_dir) / DONE).is_file()
