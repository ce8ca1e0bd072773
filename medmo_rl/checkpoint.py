"""Checkpoints of both trainers (sft/train.py, medmo_rl/learner.py): a Hugging Face folder that
transformers and vLLM load, plus the training state that only resuming needs.

    <checkpoint>/config.json, model.safetensors, generation_config.json, tokenizer + processor files
    <checkpoint>/train_state.pt   optimizer, scheduler, RNG, and the trainer's progress (step, data position)

Weights and optimizer state go through torch.distributed.checkpoint's full-state-dict API, which
reads plain, DDP-wrapped and FSDP2-sharded models alike. Under FSDP2 saving and loading are
collective (every rank calls them; rank 0 writes); for a plain or DDP model one rank may save alone.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)

from medmo_rl.parallel import full_state_options, is_fsdp, unwrap

TRAIN_STATE = "train_state.pt"


def save_checkpoint(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, processor: Any,
                    out_dir: str | os.PathLike, *, progress: dict[str, Any], is_writer: bool) -> None:
    """The HF folder + train_state.pt ({**progress, optimizer, scheduler, rng}); `is_writer` writes."""
    model_sd = get_model_state_dict(model, options=full_state_options())
    optim_sd = get_optimizer_state_dict(model, optimizer, options=full_state_options())
    if not is_writer:
        return
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    unwrap(model).save_pretrained(out, state_dict=model_sd)
    processor.save_pretrained(out)
    rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    torch.save({**progress, "optimizer": optim_sd, "scheduler": scheduler.state_dict(), "rng": rng}, out / TRAIN_STATE)


def load_train_state(ckpt_dir: str | os.PathLike) -> dict[str, Any]:
    return torch.load(Path(ckpt_dir) / TRAIN_STATE, map_location="cpu", weights_only=False)


def restore_train_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                        state: dict[str, Any]) -> None:
    """Optimizer moments, schedule position and RNG streams from a `load_train_state` dict."""
    set_optimizer_state_dict(model, optimizer, optim_state_dict=state["optimizer"],
                             options=StateDictOptions(full_state_dict=True))
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])


def load_weights(model: torch.nn.Module, ckpt_dir: str | os.PathLike) -> None:
    """The HF folder's weights into a model built before the checkpoint was known (under FSDP2
    every rank reads the full files and keeps its shard). Raises on missing or unexpected names."""
    state: dict[str, torch.Tensor] = {}
    for f in sorted(Path(ckpt_dir).glob("*.safetensors")):
        state.update(load_file(str(f)))
    expected = set(unwrap(model).state_dict())
    missing = [k for k in expected - state.keys() if "lm_head" not in k]  # tied to the embeddings: not saved
    unexpected = sorted(state.keys() - expected)
    if missing or unexpected:
        raise RuntimeError(f"checkpoint {ckpt_dir}: missing {sorted(missing)[:5]}, unexpected {unexpected[:5]}")
    if is_fsdp(model):
        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))
    else:
        unwrap(model).load_state_dict(state, strict=False)
