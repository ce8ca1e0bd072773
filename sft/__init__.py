"""Stages 1–3 of MedMO: supervised fine-tuning as Ray Train jobs (collator, train loop, checkpoints).

    from sft import run_sft_stages          # the driver's entry point (sft/stages.py)
    python -m sft --config configs/tiny.yaml [section.key=value ...]
"""
from __future__ import annotations


def __getattr__(name: str):
    # lazy, so `import sft.collator` does not pull in Ray
    if name in ("run_sft_stages", "run_stage"):
        from sft import stages

        return getattr(stages, name)
    raise AttributeError(name)
