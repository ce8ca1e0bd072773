"""One SFT stage as the body of a Ray Train `TorchTrainer` worker (paper Sec. 3.1–3.4, App. B.1–B.3).

Each worker: loads the model the stage starts from (the previous stage's `final/`, or the latest
checkpoint of this stage when Ray Train hands one back), memory-maps the stage's datasets (Arrow
folders, medmo_rl/arrow_store.py), reads the mixture as a deterministic stream (sft/mixture.py),
takes its share of every global micro-batch — collated ahead of the step by `sft.loader_workers`
DataLoader processes, at most `sft.prefetch_steps` steps each (sft/loader.py) — and trains
with AdamW (decay on matrices only), linear warm-up + cosine, gradient accumulation and clipping.
DDP on CPU (gloo); FSDP2 (`fully_shard` per vision block and decoder layer, bf16 params with fp32
reduction) on GPUs; optional gradient checkpointing. A step's loss is the mean over all answer
tokens of the step, across micro-batches and workers (the token count is all-reduced first).
Rank 0 logs loss, mean token accuracy and entropy (the curves of App. B) to metrics.jsonl and
TensorBoard; the driver shows a live progress bar from that file (sft/stages.py). Every `save_every_steps` and at the end, a checkpoint
(HF folder + optimizer/scheduler/RNG/step/data position, medmo_rl/checkpoint.py) goes through
`ray.train.report`; Ray Train keeps it under the stage folder and hands the latest back to a
restarted run (same storage_path and name), which continues at the next step and data position.

Why a plain torch loop and not TRL's SFTTrainer: the loop needs our collator (image-expanded
prompts, answer-only labels, skip accounting), a mixture stream whose position is part of the
checkpoint, Ray Train's checkpoint reporting and restoration, and FSDP2 — SFTTrainer would bring
its own accelerate launcher, data pipeline, loss normalisation and checkpoint layout, each to be
overridden inside a Ray worker. The loop below is shorter than those overrides and shows every
step; metric names follow TRL's (loss, mean_token_accuracy, entropy).
"""
from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from medmo_rl.checkpoint import load_train_state, restore_train_state, save_checkpoint
from medmo_rl.config import SFTStageConfig
from medmo_rl.metrics_log import MetricsWriter
from medmo_rl.parallel import adamw, grad_sync, optimizer_step, wrap_for_training
from medmo_rl.schedules import lr_multiplier
from medmo_rl.arrow_store import ArrowSamples, open_arrow
from sft.collator import SKIP_REASONS, SFTBatch, SFTCollator
from sft.loader import StepBatches, prefetched
from sft.loss import IGNORE, sft_token_loss
from sft.mixture import MixtureStream, steps_for_epochs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageJob:
    """Everything a worker needs to run one stage (sent to every worker through train_loop_config)."""

    stage: str  # "stage1" | "stage2" | "stage3"
    cfg: SFTStageConfig
    init_dir: str  # HF folder the stage starts from
    stage_dir: str  # where metrics, checkpoints (via Ray) and final/ live
    datasets: tuple[tuple[str, str], ...]  # (mixture name, Arrow folder of arrow_store.to_arrow), in mixture order
    weights: tuple[float, ...]  # one per dataset
    seed: int
    use_gpu: bool
    threads_per_worker: int
    dtype: str  # model.dtype: what the weights load in
    loader_workers: int = 1  # sft.loader_workers
    prefetch_steps: int = 4  # sft.prefetch_steps
    crash_at_step: int = 0  # > 0: rank 0 raises after this optimizer step (fault injection for tests)


# ---------------------------------------------------------------------------------------------
def _load_mixture(job: StageJob, rank: int) -> list[ArrowSamples]:
    """The mixture's datasets, memory-mapped; their conversion reports (rejects with ids) → data_report.json."""
    parts, report = [], {}
    for name, folder in job.datasets:
        loaded = open_arrow(folder)
        parts.append(loaded.samples)
        report[name] = {"path": folder, "records": len(loaded.samples), "rejected": len(loaded.rejected),
                        "rejected_ids": loaded.rejected[:100]}
        if loaded.rejected and rank == 0:
            log.warning("%s: %s: %s", job.stage, name, loaded.summary())
    if rank == 0:
        (Path(job.stage_dir) / "data_report.json").write_text(json.dumps(report, indent=1))
    return parts


def _build_model(src_dir: str, job: StageJob, device: torch.device) -> torch.nn.Module:
    from transformers import Qwen3VLForConditionalGeneration

    model = Qwen3VLForConditionalGeneration.from_pretrained(src_dir, dtype=getattr(torch, job.dtype))
    model.config.use_cache = False
    if job.cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return wrap_for_training(model, device, bf16=job.cfg.bf16)


def _forward_loss(model: torch.nn.Module, batch: SFTBatch, denom: float, device: torch.device,
                  autocast: bool):
    """Logits only from the first answer position on (prompts with images can be long), shifted."""
    width = batch.input_ids.shape[1]
    has_label = (batch.labels != IGNORE).any(0).nonzero()
    start = int(has_label[0]) if len(has_label) else width
    keep = width - start + 1
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        logits = model(**batch.model_inputs(device), logits_to_keep=keep).logits  # [B, keep, V]
    return sft_token_loss(logits[:, :-1], batch.labels[:, start:].to(device), denom)


def _all_sum(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


# ---------------------------------------------------------------------------------------------
def _train_step(model, optimizer, scheduler, batches: list[SFTBatch], cfg: SFTStageConfig,
                device: torch.device, world: int, autocast: bool) -> tuple[list[float], float, float]:
    """One optimizer step; returns this worker's [loss_sum, correct, entropy_sum, tokens, examples],
    the gradient norm before clipping, and the learning rate the step used."""
    step_tokens = _all_sum([sum(b.num_target_tokens for b in batches)], device)[0]
    denom = max(step_tokens, 1.0) / world  # DDP/FSDP2 average gradients over ranks: undo it
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # summed on the device: no sync per micro-batch
    for m, batch in enumerate(batches):
        with grad_sync(model, sync=m == len(batches) - 1):
            loss, stats = _forward_loss(model, batch, denom, device, autocast)
            loss.backward()
        sums += torch.stack([stats.loss_sum, stats.correct, stats.entropy_sum, stats.tokens]).double()
    grad_norm, lr = optimizer_step(model, optimizer, scheduler, cfg.grad_clip)
    *host, grad_norm = torch.cat([sums, grad_norm.double().reshape(1)]).tolist()  # one copy to the host
    return host + [float(sum(len(b.sample_ids) for b in batches))], grad_norm, lr


def train_stage_worker(config: dict[str, Any]) -> None:
    """Ray Train `train_loop_per_worker`: config = {"job": StageJob}."""
    import ray.train
    import ray.train.torch
    from transformers import AutoProcessor

    job: StageJob = config["job"]
    cfg = job.cfg
    torch.set_num_threads(job.threads_per_worker)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    t_start = time.time()

    resume = ray.train.get_checkpoint()  # this stage's latest, when Ray Train restored the run
    with resume.as_directory() if resume else contextlib.nullcontext(job.init_dir) as src_dir:
        state = load_train_state(src_dir) if resume else None
        model = _build_model(src_dir, job, device)
        processor = AutoProcessor.from_pretrained(src_dir)
    optimizer = adamw(model, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.weight_decay)
    parts = _load_mixture(job, rank)
    stream = MixtureStream([len(p) for p in parts], job.weights, job.seed)
    per_step = cfg.batch_size * cfg.grad_accum  # examples per optimizer step, all workers
    total = cfg.max_steps or steps_for_epochs([len(p) for p in parts], cfg.epochs, per_step)
    warmup = round(cfg.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(cfg.lr_scheduler, s, total, warmup))
    start_step = 0
    if state is not None:
        if (state["total_steps"], state["seed"]) != (total, job.seed):
            raise RuntimeError(f"{job.stage}: checkpoint was made for total_steps={state['total_steps']} "
                               f"seed={state['seed']}, this run has {total}, {job.seed}; use a new run dir")
        restore_train_state(model, optimizer, scheduler, state)
        start_step = state["step"]
    if rank == 0:
        log.warning("%s: starting at step %d of %d after %.1f s of set-up", job.stage, start_step, total,
                    time.time() - t_start)

    collator = SFTCollator(processor, answer_format=cfg.answer_format, max_pixels=cfg.max_pixels,
                           max_seq_len=cfg.max_seq_len)
    steps = StepBatches(stream, parts, collator, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum, rank=rank,
                        world=world, start_step=start_step, total_steps=total)
    metrics = None
    if rank == 0:
        metrics = MetricsWriter(Path(job.stage_dir) / "metrics.jsonl", Path(job.stage_dir) / "tensorboard")
        metrics.truncate_after(start_step)  # a resumed run redoes the steps after its checkpoint
    autocast = cfg.bf16 and not job.use_gpu  # on GPU the FSDP2 policy casts
    skips, skipped_ids = Counter(), {}  # what the collator skipped (in the loader processes), this run
    window, window_steps, t_window, skipped_logged, wait_s = [0.0] * 5, 0, time.time(), 0, 0.0
    # closing ends the loader processes and removes their hand-off folder, on a crash too
    with contextlib.closing(prefetched(steps, workers=job.loader_workers, prefetch_steps=job.prefetch_steps)) as data:
        for step in range(start_step + 1, total + 1):
            t_wait = time.time()
            item = next(data)
            wait_s += time.time() - t_wait
            assert item.step == step, (item.step, step)
            skips.update(item.skip_counts)
            for rid, why in item.skipped_ids.items():
                skipped_ids.setdefault(rid, why)
            sums, grad_norm, lr = _train_step(model, optimizer, scheduler, item.batches, cfg, device, world, autocast)
            window = [a + b for a, b in zip(window, sums)]
            window_steps += 1
            if step % cfg.log_every_steps == 0 or step == total:
                skipped = sum(skips.values())
                loss_sum, correct, entropy_sum, tokens, examples, new_skips = _all_sum(
                    window + [skipped - skipped_logged], device)
                n, window_s = max(tokens, 1.0), max(time.time() - t_window, 1e-9)
                row = {"stage": job.stage, "loss": loss_sum / n, "mean_token_accuracy": correct / n,
                       "entropy": entropy_sum / n, "lr": lr, "grad_norm": grad_norm, "tokens": tokens,
                       "examples": examples, "skipped": new_skips, "position": step * per_step,
                       "steps_per_s": window_steps / window_s, "data_wait_share": min(1.0, wait_s / window_s),
                       "total_steps": total}
                if metrics:
                    metrics.write(step, row)
                window, window_steps, t_window, skipped_logged, wait_s = [0.0] * 5, 0, time.time(), skipped, 0.0
            if (cfg.save_every_steps and step % cfg.save_every_steps == 0) or step == total:
                _save_and_report(model, optimizer, scheduler, processor, job, step, step * per_step, total, rank)
            if job.crash_at_step and step == job.crash_at_step and rank == 0:
                raise RuntimeError(f"{job.stage}: injected crash after step {step}")
    _write_skips(skips, skipped_ids, Path(job.stage_dir), rank, device)
    if metrics:
        metrics.close()


def _save_and_report(model, optimizer, scheduler, processor, job: StageJob, step: int, position: int,
                     total: int, rank: int) -> None:
    import ray.train

    tmp = Path(tempfile.mkdtemp(prefix=f"sft-{job.stage}-")) if rank == 0 else None
    try:
        save_checkpoint(model, optimizer, scheduler, processor, tmp or ".", is_writer=rank == 0,
                        progress={"step": step, "position": position, "total_steps": total, "seed": job.seed,
                                     "stage": job.stage})
        ckpt = ray.train.Checkpoint.from_directory(str(tmp)) if tmp else None
        ray.train.report({"step": step}, checkpoint=ckpt, checkpoint_dir_name=f"checkpoint_{step:06d}")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _write_skips(skips: Counter, skipped_ids: dict[str, str], stage_dir: Path, rank: int,
                 device: torch.device) -> None:
    counts = _all_sum([skips[r] for r in SKIP_REASONS], device)
    if skipped_ids:
        (stage_dir / f"skipped_ids.rank{rank}.json").write_text(json.dumps(skipped_ids, indent=1))
    if rank == 0:
        (stage_dir / "skipped.json").write_text(json.dumps(dict(zip(SKIP_REASONS, map(int, counts)))))

