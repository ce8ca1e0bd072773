"""Data parallelism shared by the SFT trainer (sft/train.py) and the RL learner (medmo_rl/learner.py).

    GPU, process group up   FSDP2: `fully_shard` per vision block and decoder layer, then the root;
                            bf16 (or fp32) compute, fp32 gradient reduction
    CPU, world size > 1     DDP over gloo
    otherwise               the model itself

Gradients are averaged over ranks by both wrappers; callers that normalise by a global token count
multiply their loss by the world size to undo it. `full_state_dict` gives the full weights of any
of the three (under FSDP2 every rank must call it; rank 0 gets the tensors).
"""
from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict


def wrap_for_training(model: torch.nn.Module, device: torch.device, *, bf16: bool = False,
                      find_unused_parameters: bool = False) -> torch.nn.Module:
    """Move `model` to `device` and wrap it for the running process group (see module docstring)."""
    distributed = dist.is_available() and dist.is_initialized()
    if device.type == "cuda" and distributed:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        # the full fp32 model visits each GPU once before sharding (32 GB for 8B): simple, and fits
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else torch.float32, reduce_dtype=torch.float32)
        model.to(device)
        for block in (*model.model.visual.blocks, *model.model.language_model.layers):
            fully_shard(block, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
        return model
    if distributed and dist.get_world_size() > 1:
        return torch.nn.parallel.DistributedDataParallel(model.to(device), find_unused_parameters=find_unused_parameters)
    return model.to(device)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The HF model inside a DDP wrapper (FSDP2 shards the module in place, so it is itself)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def is_fsdp(model: torch.nn.Module) -> bool:
    return hasattr(model, "set_requires_gradient_sync")


def grad_sync(model: torch.nn.Module, sync: bool):
    """Context in which backward all-reduces gradients only when `sync` (the step's last micro-batch)."""
    if is_fsdp(model):
        model.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()
    if not sync and isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


def full_state_options() -> StateDictOptions:
    # cpu_offload gathers onto rank 0's CPU only; it needs a process group
    return StateDictOptions(full_state_dict=True, cpu_offload=dist.is_available() and dist.is_initialized())


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """HF-named full CPU tensors (copies) of a model. FSDP2: collective, rank 0 gets them (gathered
    to its CPU); a plain module's own state dict otherwise, on whichever rank asks — no collective."""
    if is_fsdp(model):
        return {k: v.contiguous() for k, v in get_model_state_dict(model, options=full_state_options()).items()}
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in unwrap(model).state_dict().items()}
