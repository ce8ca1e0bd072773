"""SFT checkpoints: a Hugging Face folder (transformers and vLLM load it) plus the training state.

    <checkpoint>/config.json, model.safetensors, generation_config.json, tokenizer + processor files
    <checkpoint>/train_state.pt   optimizer, scheduler, step, data position (only for resuming)

Weights and optimizer state are gathered with torch.distributed.checkpoint's full-state-dict API,
which reads DDP-wrapped and FSDP2-sharded models alike; only rank 0 writes. A stage's final
checkpoint is exported as the HF files alone, with the `DONE` marker written last.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_optimizer_state_dict)

from medmo_rl.parallel import full_state_options, unwrap

TRAIN_STATE = "train_state.pt"
DONE = "DONE"


def save_checkpoint(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, processor: Any,
                    out_dir: str | os.PathLike, *, train_state: dict[str, Any], is_writer: bool) -> None:
    """Collective: every rank calls it; rank `is_writer` writes the HF folder + train_state.pt."""
    model_sd = get_model_state_dict(model, options=full_state_options())
    optim_sd = get_optimizer_state_dict(model, optimizer, options=full_state_options())
    if not is_writer:
        return
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    unwrap(model).save_pretrained(out, state_dict=model_sd)
    processor.save_pretrained(out)
    torch.save({**train_state, "optimizer": optim_sd, "scheduler": scheduler.state_dict()}, out / TRAIN_STATE)


def load_train_state(ckpt_dir: str | os.PathLike) -> dict[str, Any]:
    return torch.load(Path(ckpt_dir) / TRAIN_STATE, map_location="cpu", weights_only=False)


def restore_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer, optim_sd: dict[str, Any]) -> None:
    set_optimizer_state_dict(model, optimizer, optim_state_dict=optim_sd,
                             options=StateDictOptions(full_state_dict=True))


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
