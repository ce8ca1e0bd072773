"""What the SFT trainer (sft/train.py) and the RL learner (medmo_rl/learner.py) share: data
parallelism, the AdamW parameter groups and the optimizer step.

    GPU, process group up   FSDP2: `fully_shard` per vision block and decoder layer, then the root;
                            bf16 (or fp32) compute, fp32 gradient reduction
    CPU, world size > 1     DDP over gloo
    otherwise               the model itself

Gradients are averaged over ranks by both wrappers; callers that normalise by a global token count
multiply their loss by the world size to undo it. `full_state_dict` gives the full weights of any
of the three (under FSDP2 every rank must call it; rank 0 gets the tensors).

`weight_decay` decays matrices only (`adamw`), and the learning rate a trainer logs is the one its
last optimizer step used (`optimizer_step`), in both trainers.
"""
from __future__ import annotations

import contextlib
from typing import Any

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


def adamw(model: torch.nn.Module, *, lr: float, betas: tuple[float, float], weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, weight decay on matrices (ndim ≥ 2: linear, embedding
    and patch-embedding weights) only: decaying a norm's gain or a bias pulls it towards 0, which
    is a change of the function rather than a regulariser (nanoGPT's configure_optimizers: the same)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                   max_norm: float) -> tuple[torch.Tensor, float]:
    """Clip, step, advance the schedule, zero the gradients. Returns (the gradient norm before
    clipping, a tensor: reading it is the caller's device sync; the learning rate this step used —
    `scheduler.get_last_lr()` after the step would already be the next one). max_norm 0: no clipping."""
    norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], max_norm or float("inf"))
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return (norm.full_tensor() if hasattr(norm, "full_tensor") else norm), lr  # a DTensor under FSDP2
