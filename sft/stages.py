"""Stages 1 → 2 → 3 of SFT, each one `TorchTrainer.fit()` (one fit per stage: each costs ~15 s).

    final = run_sft_stages(cfg, base_model_dir, run_dir, data_cache_dir)

Layout under run_dir:
    sft/stageK/job.json            what the stage was asked to do (start model, datasets, settings)
    sft/stageK/metrics.jsonl, tensorboard/   loss, mean token accuracy, entropy, lr, grad norm per logged step
    sft/stageK/loss.png, mean_token_accuracy.png, entropy.png   the curves of the paper's App. B
    sft/stageK/checkpoint_NNNNNN/  Ray Train's copies of the reported checkpoints (last 2 kept)
    sft/stageK/final/              HF folder of the stage's last step; final/DONE is written last
A stage whose final/DONE exists is skipped; a disabled stage passes its input model on. A stage
killed mid-way resumes from its last checkpoint when run again with the same run_dir (Ray Train
restores the checkpoint list from the stage folder). On a multi-node cluster run_dir must be on
storage every node mounts (it is Ray Train's storage_path, and rank 0 writes metrics there), and so
must the data cache: the workers memory-map the Arrow folders it converted (cluster/README.md).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

from medmo_rl.config import DataConfig, ModelConfig, RunConfig, SFTConfig, SFTStageConfig
from medmo_rl.datasets import resolve_arrow
from medmo_rl.metrics_log import MetricsProgress, read_metrics
from sft.checkpoint import export_final, is_done
from sft.train import StageJob, train_stage_worker

log = logging.getLogger(__name__)

STAGES = ("stage1", "stage2", "stage3")


def _check(stage: str, cfg: SFTStageConfig, sft: SFTConfig) -> None:
    if not cfg.mixture:
        raise ValueError(f"sft.{stage}.mixture: an enabled stage needs at least one dataset")
    for name, w in cfg.mixture.items():
        if w <= 0:
            raise ValueError(f"sft.{stage}.mixture.{name}: weight must be > 0, got {w}")
    if cfg.batch_size % sft.num_workers:
        raise ValueError(f"sft.{stage}.batch_size: {cfg.batch_size} is not divisible by "
                         f"sft.num_workers={sft.num_workers}")


def _plot_curves(stage_dir: Path, stage: str) -> None:
    from medmo_rl.plots import line_curves  # matplotlib: only where plots are drawn

    rows = read_metrics(stage_dir / "metrics.jsonl")
    steps = [r["step"] for r in rows]
    for key in ("loss", "mean_token_accuracy", "entropy"):
        line_curves({key: (steps, [r[key] for r in rows])}, stage_dir / f"{key}.png",
                    title=f"SFT {stage}: {key.replace('_', ' ')}", ylabel=key, xlabel="optimizer step")


def run_stage(stage: str, cfg: SFTStageConfig, sft: SFTConfig, data: DataConfig, *, seed: int,
              init_dir: str | Path, stage_dir: str | Path, data_cache_dir: str | Path,
              crash_at_step: int = 0, progress: bool = True, dtype: str = ModelConfig.dtype) -> Path:
    """Train one stage from `init_dir` as a Ray Train job; returns `stage_dir/final` (HF folder).
    `dtype` (model.dtype): what the weights load in."""
    import ray.train
    from ray.train.torch import TorchTrainer

    stage_dir = Path(stage_dir).resolve()
    final = stage_dir / "final"
    if is_done(final):
        log.info("%s: %s exists, skipping", stage, final / "DONE")
        return final
    _check(stage, cfg, sft)
    stage_dir.mkdir(parents=True, exist_ok=True)
    # converted (validated, rejects reported) once here, memory-mapped by every worker
    datasets = tuple((name, str(resolve_arrow(name, data, data_cache_dir))) for name in cfg.mixture)
    job = StageJob(stage=stage, cfg=cfg, init_dir=str(Path(init_dir).resolve()), stage_dir=str(stage_dir),
                   datasets=datasets, weights=tuple(cfg.mixture.values()), seed=seed, use_gpu=sft.use_gpu,
                   threads_per_worker=max(1, int(sft.cpus_per_worker)), crash_at_step=crash_at_step, dtype=dtype,
                   loader_workers=sft.loader_workers, prefetch_steps=sft.prefetch_steps)
    (stage_dir / "job.json").write_text(json.dumps(dataclasses.asdict(job), indent=1))
    trainer = TorchTrainer(
        train_stage_worker,
        train_loop_config={"job": job},
        scaling_config=ray.train.ScalingConfig(num_workers=sft.num_workers, use_gpu=sft.use_gpu,
                                               resources_per_worker={"CPU": sft.cpus_per_worker}),
        run_config=ray.train.RunConfig(storage_path=str(stage_dir.parent), name=stage_dir.name,
                                       checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.keep_checkpoints)),
    )
    t0 = time.time()
    # the loop runs in the Ray Train workers; rank 0's metrics rows drive the console's bar
    with MetricsProgress(stage_dir / "metrics.jsonl", desc=f"SFT {stage}", show=("loss", "mean_token_accuracy"),
                         enabled=progress):
        result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"{stage}: the Ray Train job finished without a checkpoint (see {stage_dir})")
    with result.checkpoint.as_directory() as ckpt_dir:
        export_final(ckpt_dir, final)
    _plot_curves(stage_dir, stage)
    (stage_dir / "summary.json").write_text(json.dumps(
        {"stage": stage, "fit_s": round(time.time() - t0, 1), "checkpoint": result.checkpoint.path,
         "final": str(final)}, indent=1))
    log.info("%s: done in %.0f s → %s", stage, time.time() - t0, final)
    return final


def run_sft_stages(cfg: RunConfig, base_model_dir: str | Path, run_dir: str | Path,
                   data_cache_dir: str | Path) -> Path:
    """Chain the enabled stages (each starts from the previous one's final/); returns the last model."""
    current = Path(base_model_dir)
    for stage in STAGES:
        stage_cfg: SFTStageConfig = getattr(cfg.sft, stage)
        if not stage_cfg.enabled:
            log.info("%s: disabled, skipping", stage)
            continue
        # a different mixture stream per stage, all fixed by the run's seed
        current = run_stage(stage, stage_cfg, cfg.sft, cfg.data, seed=cfg.seed + STAGES.index(stage),
                            init_dir=current, stage_dir=Path(run_dir) / "sft" / stage, data_cache_dir=data_cache_dir,
                            dtype=cfg.model.dtype)
    return current
