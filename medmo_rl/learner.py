"""One learner rank: the policy model, AdamW + warm-up/cosine, and DAPO updates on `TrainItem`s.

A plain class — constructible and testable without Ray; `medmo_rl/driver/learner_group.py` wraps N of
them as Ray actors joined by torch.distributed: DDP over gloo on CPU, FSDP2 over NCCL on GPUs
(medmo_rl/parallel.py; the FSDP2 path is written but has not run on a GPU yet). Under FSDP2 every
forward is collective, so weights, probe, save and load run on all ranks (LearnerGroup does so).

One `train_step` = one rollout batch (this rank's shard):
  1. old log-probs recomputed under the current weights (no grad) — π_old of eq. 4; the engine's
     (vLLM) log-probs are kept too and their mismatch reported (≈1e-6 in fp32);
  2. the shard is cut into `mini_batches` chunks, each ONE optimizer step made of `grad_accum`
     micro-batches; the loss of every micro-batch is divided by the global token count of its
     mini-batch (all ranks), then ×world_size because DDP averages gradients over ranks.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from medmo_rl.algos import dapo_policy_loss, token_entropy
from medmo_rl.config import RLConfig
from medmo_rl.parallel import full_state_dict, full_state_options, grad_sync, is_fsdp, unwrap, wrap_for_training
from medmo_rl.probe import hf_probe_logprobs
from medmo_rl.prompts import load_image
from medmo_rl.records import TrainItem
from medmo_rl.schedules import lr_multiplier


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def split_even(seq: list, parts: int) -> list[list]:
    """Cut into `parts` contiguous chunks whose sizes differ by at most one."""
    k, r = divmod(len(seq), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + k + (1 if i < r else 0)
        out.append(seq[start:end])
        start = end
    return out


class Learner:
    def __init__(self, model_dir: str, rl: RLConfig, *, total_steps: int, max_pixels: int, rank: int = 0,
                 world_size: int = 1, seed: int = 42, num_threads: int = 1):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        torch.set_num_threads(max(1, num_threads))
        torch.manual_seed(seed + rank)
        self.rl, self.rank, self.world_size, self.max_pixels = rl, rank, world_size, max_pixels
        self.total_steps = max(1, total_steps)
        self.device = torch.device("cuda", torch.cuda.current_device()) if rl.use_gpu and torch.cuda.is_available() else torch.device("cpu")
        # FSDP2 keeps fp32 master weights and computes in bf16 (its policy); elsewhere bf16 is the weights' dtype
        fsdp = self.device.type == "cuda" and world_size > 1
        dtype = torch.bfloat16 if rl.bf16 and not fsdp else torch.float32
        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype).to(self.device)
        self.model.train()
        if rl.freeze_vision:
            self.model.model.visual.requires_grad_(False)
        self.image_token_id = self.model.config.image_token_id
        c = self.model.config
        # A sampled vision token in a completion would make HF splice image features there
        # ("Image features and image tokens do not match"); vLLM embedded it as text. The rollout
        # bans them; this keeps the learner safe whatever engine produced the tokens.
        self.vision_ids = {i for i in (c.image_token_id, getattr(c, "video_token_id", None),
                                       getattr(c, "vision_start_token_id", None), getattr(c, "vision_end_token_id", None))
                           if i is not None}
        self.pad_id = self.processor.tokenizer.pad_token_id or 0
        self.ref_model = None
        if rl.kl_type != "none" and rl.kl_coef > 0:  # frozen, unsharded: bf16 of an 8B model is 16 GB per GPU
            ref_dtype = torch.bfloat16 if rl.bf16 else torch.float32
            self.ref_model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=ref_dtype).to(self.device).eval()
            self.ref_model.requires_grad_(False)
        self.train_model: torch.nn.Module = self.model  # what forward/backward go through (DDP / FSDP2 wrapper)
        if world_size == 1:
            self._make_optimizer()

    def _make_optimizer(self) -> None:
        """After wrapping: FSDP2 turns the parameters into DTensors, and the optimizer must hold those."""
        rl = self.rl
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=rl.lr,
                                           betas=(rl.adam_beta1, rl.adam_beta2), weight_decay=rl.weight_decay)
        warmup = int(round(rl.warmup_ratio * self.total_steps * rl.mini_batches))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_multiplier(rl.lr_scheduler, s, self.total_steps * rl.mini_batches, warmup))

    # -- wiring ----------------------------------------------------------------------------
    def init_distributed(self, master_addr: str, master_port: int) -> int:
        import torch.distributed as dist

        if self.world_size > 1:
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend, init_method=f"tcp://{master_addr}:{master_port}",
                                    rank=self.rank, world_size=self.world_size)
            # The vision tower's deepstack path may leave parameters unused on text-only batches.
            self.train_model = wrap_for_training(self.model, self.device, bf16=self.rl.bf16, find_unused_parameters=True)
            self._make_optimizer()
        return self.rank

    # -- inputs ----------------------------------------------------------------------------
    def _inputs(self, items: Sequence[TrainItem]) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """Right-padded batch. Returns (model inputs, completion token ids [B, T], mask [B, T]),
        where completion position t of row b sits at input position P_b + t."""
        images = [load_image(p, self.max_pixels) for it in items for p in it.sample.images]
        seqs = [list(it.prompt_token_ids) + list(it.completion_token_ids) for it in items]
        L = max(len(s) for s in seqs)
        T = max(1, max(len(it.completion_token_ids) for it in items))
        ids = torch.full((len(items), L), self.pad_id, dtype=torch.long)
        attn = torch.zeros((len(items), L), dtype=torch.long)
        comp = torch.zeros((len(items), T), dtype=torch.long)
        mask = torch.zeros((len(items), T), dtype=torch.float32)
        for b, (it, s) in enumerate(zip(items, seqs)):
            P = len(it.prompt_token_ids)
            s = s[:P] + [self.pad_id if t in self.vision_ids else t for t in s[P:]]
            ids[b, : len(s)] = torch.tensor(s)
            attn[b, : len(s)] = 1
            n = len(it.completion_token_ids)
            comp[b, :n] = torch.tensor(it.completion_token_ids, dtype=torch.long)
            mask[b, :n] = 1.0 if it.loss_mask else 0.0
        inputs: dict[str, torch.Tensor] = {"input_ids": ids, "attention_mask": attn,
                                           "mm_token_type_ids": (ids == self.image_token_id).long()}
        if images:
            pix = self.processor.image_processor(images=images, return_tensors="pt")
            inputs["pixel_values"] = pix["pixel_values"]
            inputs["image_grid_thw"] = pix["image_grid_thw"]
        return {k: v.to(self.device) for k, v in inputs.items()}, comp.to(self.device), mask.to(self.device)

    def _completion_logits(self, model: torch.nn.Module, items: Sequence[TrainItem]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        inputs, comp, mask = self._inputs(items)
        logits = model(**inputs).logits  # [B, L, V]
        T = comp.shape[1]
        # logits at position P−1+t predict completion token t
        starts = torch.tensor([len(it.prompt_token_ids) - 1 for it in items], device=logits.device)
        idx = starts[:, None] + torch.arange(T, device=logits.device)[None, :]
        idx = idx.clamp(max=logits.shape[1] - 1)
        sel = logits.gather(1, idx[:, :, None].expand(-1, -1, logits.shape[-1])).float()
        return sel, comp, mask

    @staticmethod
    def _gather_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(logits, dim=-1).gather(-1, tokens[..., None])[..., 0]

    @torch.no_grad()
    def logprobs(self, items: Sequence[TrainItem], micro_batch: int | None = None) -> list[list[float]]:
        """Per-token log-probs of each item's completion under the current weights."""
        out: list[list[float]] = []
        mb = micro_batch or self.rl.batch_size
        for i in range(0, len(items), mb):
            chunk = items[i : i + mb]
            logits, comp, _ = self._completion_logits(self.model, chunk)
            lp = self._gather_logprobs(logits, comp).cpu()
            out += [lp[b, : len(it.completion_token_ids)].tolist() for b, it in enumerate(chunk)]
        return out

    # -- the update ------------------------------------------------------------------------
    def train_step(self, mini_batches: Sequence[Sequence[TrainItem]], mini_batch_tokens: Sequence[int]) -> dict[str, float]:
        """DAPO update: one optimizer step per mini-batch of this rank's shard.

        `mini_batch_tokens[k]`: unmasked tokens of mini-batch k over ALL ranks. Every rank must get
        the same number of micro-batches (DDP all-reduces in backward); `LearnerGroup` pads shards
        with masked-out items to make it so.
        """
        rl = self.rl
        # per mini-batch, in micro-batches of batch_size: the same number of forwards on every rank (FSDP2)
        olds = [self.logprobs(mb) for mb in mini_batches]
        mismatch = [abs(a - b) for mb, mb_old in zip(mini_batches, olds) for it, o in zip(mb, mb_old)
                    for a, b in zip(o, it.engine_logprobs) if it.loss_mask]
        model = self.train_model
        sums: dict[str, float] = {k: 0.0 for k in ("loss", "tokens", "clip_low", "clip_high", "ratio_sum", "kl", "entropy")}
        ratio_max, grad_norm = 0.0, 0.0
        for mb_items, mb_old, n_global in zip(mini_batches, olds, mini_batch_tokens):
            self.optimizer.zero_grad(set_to_none=True)
            micro = [(mb_items[i : i + rl.batch_size], mb_old[i : i + rl.batch_size])
                     for i in range(0, len(mb_items), rl.batch_size)]
            for j, (chunk, chunk_old) in enumerate(micro):
                with grad_sync(model, sync=j == len(micro) - 1):
                    logits, comp, mask = self._completion_logits(model, chunk)
                    lp = self._gather_logprobs(logits, comp)
                    old_t = _pad([o for o in chunk_old], lp.shape[1], lp.device)
                    adv = torch.tensor([it.advantage for it in chunk], dtype=lp.dtype, device=lp.device)
                    ref = None
                    if self.ref_model is not None:
                        with torch.no_grad():
                            ref_logits, _, _ = self._completion_logits(self.ref_model, chunk)
                            ref = self._gather_logprobs(ref_logits, comp)
                    loss, st = dapo_policy_loss(lp, old_t, adv, mask, eps_low=rl.eps_low, eps_high=rl.eps_high,
                                                num_tokens=float(max(1, n_global)), ref_logprobs=ref,
                                                kl_type=rl.kl_type, kl_coef=rl.kl_coef)
                    (loss * self.world_size).backward()
                with torch.no_grad():
                    ent = token_entropy(logits)
                sums["loss"] += float(loss.detach())
                sums["tokens"] += float(st.tokens)
                sums["clip_low"] += float(st.clip_low_tokens)
                sums["clip_high"] += float(st.clip_high_tokens)
                sums["ratio_sum"] += float(st.ratio_sum)
                sums["kl"] += float(st.kl_sum)
                sums["entropy"] += float((ent * mask).sum())
                ratio_max = max(ratio_max, float(st.ratio_max))
            norm = torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], rl.grad_clip)
            grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # a DTensor under FSDP2
            self.optimizer.step()
            self.scheduler.step()
        sums.update(ratio_max=ratio_max, grad_norm=grad_norm, lr=self.scheduler.get_last_lr()[0],
                    engine_mismatch_max=max(mismatch, default=0.0),
                    engine_mismatch_sum=float(sum(mismatch)), engine_mismatch_n=float(len(mismatch)))
        return sums

    # -- weights and checkpoints -----------------------------------------------------------
    def weights(self) -> dict[str, torch.Tensor]:
        """HF-named CPU tensors of the policy (what vLLM reloads). Under FSDP2: collective, rank 0 gets them."""
        return full_state_dict(self.model)

    def probe_logprobs(self, probe: Any) -> list[float]:
        self.model.eval()
        try:
            return hf_probe_logprobs(self.model, self.processor, probe)
        finally:
            self.model.train()

    def save(self, path: str) -> None:
        """HF model + processor (loadable by transformers and vLLM) and the optimizer/scheduler/RNG state.
        Under FSDP2: collective (every rank gathers), rank 0 writes."""
        model_sd, optim_sd = None, self.optimizer.state_dict()
        if is_fsdp(self.model):
            from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

            model_sd = full_state_dict(self.model)
            optim_sd = get_optimizer_state_dict(self.model, self.optimizer, options=full_state_options())
        if self.rank != 0:
            return
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        unwrap(self.model).save_pretrained(p / "model", state_dict=model_sd)
        self.processor.save_pretrained(p / "model")
        torch.save({"optimizer": optim_sd, "scheduler": self.scheduler.state_dict(),
                    "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}},
                   p / "trainer_state.pt")

    def load(self, path: str) -> None:
        from safetensors.torch import load_file
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                             set_optimizer_state_dict)

        p = Path(path)
        state = {}
        for f in sorted((p / "model").glob("*.safetensors")):
            state.update(load_file(str(f)))
        ts = torch.load(p / "trainer_state.pt", weights_only=False)
        if is_fsdp(self.model):  # every rank reads the full files and keeps its shard
            full = StateDictOptions(full_state_dict=True, strict=False)
            set_model_state_dict(self.model, state, options=full)
            set_optimizer_state_dict(self.model, self.optimizer, optim_state_dict=ts["optimizer"], options=full)
        else:
            missing, unexpected = self.model.load_state_dict(state, strict=False)
            real_missing = [k for k in missing if "lm_head" not in k]  # tied to the embeddings
            if real_missing or unexpected:
                raise RuntimeError(f"checkpoint {p}: missing {real_missing[:5]}, unexpected {unexpected[:5]}")
            self.optimizer.load_state_dict(ts["optimizer"])
        self.scheduler.load_state_dict(ts["scheduler"])
        torch.set_rng_state(ts["rng"]["torch"])
        np.random.set_state(ts["rng"]["numpy"])
        random.setstate(ts["rng"]["python"])


def _pad(rows: list[list[float]], T: int, device: torch.device) -> torch.Tensor:
    out = torch.zeros((len(rows), T), dtype=torch.float32, device=device)
    for b, r in enumerate(rows):
        out[b, : len(r)] = torch.tensor(r[:T], dtype=torch.float32)
    return out
