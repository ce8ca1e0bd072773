"""`run_pipeline`, behind `python -m medmo_rl.run`: the stages in order, and the run directory.

    runs/<name>/
      config.yaml            the resolved config
      base/                  the base model (the tiny one is built here)
      data/                  generated synthetic data
      sft/stage{1,2,3}/      Ray Train checkpoints, metrics.jsonl, tensorboard/, final/ (HF format)
      rl/                    metrics.jsonl, tensorboard/, checkpoints/, final/ (HF), reward_curve.png,
                             faults.jsonl (what died, what was done), resources.jsonl/.png (driver/monitor.py)
      eval/                  results.md / .json per model, overlays/
      summary.md             stage times, final metrics, where things are

Every stage skips itself when its `final/DONE` exists, and RL resumes from its last checkpoint,
so rerunning the same command after a crash or a kill continues where the run stopped. Inside
one job, a learner rank that dies makes the RL stage rebuild its learner group and replay from
the last RL checkpoint (`rebuild_learners`); dead rollout actors and reward services are replaced
by the pool and driver/reward_service.py.

Before anything trains, every stage to run is checked against the cluster's resources (a config
that cannot fit stops here, naming demand, supply and keys); right before each stage the check
runs again and the stage gets its config with CPU reservations scaled to fit (driver/fit.py).
Under `ray job submit --working-dir` a relative output_dir resolves outside Ray's temporary copy
(driver/run_dir.py run_dir_for); the absolute run directory is printed first.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
from transformers import AutoProcessor

from medmo_rl.checkpoint import TRAIN_STATE
from medmo_rl.config import RunConfig, dump_yaml
from medmo_rl.datasets import open_dataset
from medmo_rl.driver.cluster import (EXIT_PREEMPTED, ClusterTooSmall, check_fit, cluster_supply, init_ray, log_scaling,
                                     start_gcs_watchdog)
from medmo_rl.driver.run_dir import BadRunDir, check_run_dir, run_dir_for
from medmo_rl.driver.control import start_control
from medmo_rl.driver.eval_runner import evaluate
from medmo_rl.driver.fit import Fit, Reservation, max_rollout_workers, rl_demand, scale_rl, scale_sft, sft_demand
from medmo_rl.driver.learner_group import LearnerGroup, LearnerLost
from medmo_rl.driver.monitor import MIB, ResourceMonitor, in_bytes
from medmo_rl.driver.reward_service import RewardService
from medmo_rl.driver.rl_loop import Preempted, total_steps, train_rl
from medmo_rl.faults import FaultLog
from medmo_rl.metrics_log import MetricsWriter, read_metrics, strict_json
from medmo_rl.plots import reward_curve
from medmo_rl.probe import make_probe
from medmo_rl.tiny_model import resolve_model
from rewards.client import RewardClient
from rollout.pool import RolloutPool
from sft.stages import run_stage

log = logging.getLogger("medmo_rl")
SFT_STAGES = ("stage1", "stage2", "stage3")


@dataclass
class RunSummary:
    run_dir: Path
    stage_seconds: dict[str, float] = field(default_factory=dict)
    evals: dict[str, dict[str, float]] = field(default_factory=dict)  # model label → metrics
    notes: list[str] = field(default_factory=list)
    rl: dict[str, float] = field(default_factory=dict)

    def markdown(self) -> str:
        lines = [f"# Run summary — {self.run_dir}", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in self.stage_seconds.items()]
        lines += [f"| **total** | {sum(self.stage_seconds.values()):.1f} |", ""]
        if self.evals:
            cols = sorted({c for m in self.evals.values() for c in m})
            lines += ["| model | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
            for label, m in self.evals.items():
                lines.append(f"| {label} | " + " | ".join(f"{m[c]:.3f}" if c in m else "—" for c in cols) + " |")
            lines.append("")
        if self.rl:
            lines += ["RL: " + ", ".join(f"{k} {v:.3f}" for k, v in self.rl.items()), ""]
        lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def run_rl_stage(cfg: RunConfig, policy_dir: Path, rl_dir: Path, data_cache: Path, summary: RunSummary) -> Path:
    final = rl_dir / "final"
    if (final / "DONE").exists():
        log.info("stage4: %s exists, skipping", final / "DONE")
        return final
    rl_dir.mkdir(parents=True, exist_ok=True)
    rep = open_dataset(cfg.rl.train_set, cfg.data, data_cache)  # memory-mapped Arrow, read by index
    if rep.rejected:
        summary.notes.append(f"RL train set: {rep.summary()}")
        log.warning("RL train set: %s", rep.summary())
    n_steps = total_steps(cfg, len(rep.samples))
    probe = make_probe(AutoProcessor.from_pretrained(policy_dir))
    metrics = MetricsWriter(rl_dir / "metrics.jsonl", rl_dir / "tensorboard")
    faults = FaultLog(rl_dir / "faults.jsonl")
    monitor = ResourceMonitor(rl_dir / "resources.jsonl", cfg.rl.monitor_every)
    # an autoscaling cluster may grow for a resize; a fixed one refuses sizes it cannot place
    max_workers, why = (None, "") if cfg.cluster.autoscaler_wait_s > 0 else max_rollout_workers(cfg, cluster_supply())
    control = start_control(cfg.name, cfg.rollout.num_workers, max_workers, why)
    new_learners = lambda: LearnerGroup(str(policy_dir), cfg.rl, total_steps=n_steps,
                                        max_pixels=cfg.rollout.max_pixels, seed=cfg.seed, dtype=cfg.model.dtype)
    pool = learners = None
    try:
        with RewardService(cfg, rl_dir, faults=faults) as svc, RewardClient(
                svc.url, read_timeout_s=cfg.reward.timeout_s, retries=cfg.reward.retries,
                max_concurrency=cfg.reward.max_concurrency) as client:
            learners = new_learners()
            pool = RolloutPool(str(policy_dir), cfg.rollout, seed=cfg.seed, faults=faults)
            for restarts in range(cfg.rl.max_learner_restarts + 1):
                try:
                    train_rl(cfg, policy_dir, rl_dir, rep.samples, pool=pool, learners=learners, client=client,
                             probe=probe, metrics=metrics, learner_restarts=restarts, monitor=monitor,
                             desired_rollout_workers=lambda: ray.get(control.get_rollout_workers.remote()))
                    break
                except LearnerLost as exc:
                    if restarts == cfg.rl.max_learner_restarts:
                        raise RuntimeError(f"{exc}; the learner group was rebuilt {restarts} times already "
                                           f"(rl.max_learner_restarts)") from exc
                    learners = rebuild_learners(learners, new_learners, rl_dir, exc, faults)
            summary.notes += faults.lines()  # what died during RL and what was done about it
            tmp = rl_dir / ".final_tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            learners.save(str(tmp))
            (tmp / TRAIN_STATE).unlink()  # final/ is the HF folder alone
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            (final / "DONE").write_text("ok\n")
    finally:
        metrics.close()
        if pool is not None:
            pool.shutdown()
        if learners is not None:
            learners.shutdown()
        ray.kill(control)
    growth = monitor.finish()
    if growth:
        summary.notes.append("RL resources, growth per 100 steps (rl/resources.png): " + ", ".join(
            f"{k} {v / MIB:+.1f} MiB" if in_bytes(k) else f"{k} {v:+.1f}"
            for k, v in growth.items()))
    rows = read_metrics(rl_dir / "metrics.jsonl")
    if rows:
        steps = [r["step"] for r in rows]
        reward_curve(steps, [r["reward/total"] or 0.0 for r in rows], rl_dir / "reward_curve.png",
                     title="DAPO: mean total reward per step", ylabel="mean total reward")
        reward_curve(steps, [r["reward/bbox"] or 0.0 for r in rows], rl_dir / "bbox_reward_curve.png",
                     title="DAPO: mean bounding-box reward per step (cf. paper Fig. 16)", ylabel="mean bbox reward")
        k = max(1, len(rows) // 4)
        first = [r["reward/bbox"] for r in rows[:k] if r["reward/bbox"] is not None]
        last = [r["reward/bbox"] for r in rows[-k:] if r["reward/bbox"] is not None]
        summary.rl = {"bbox_reward_first_quarter": sum(first) / max(1, len(first)),
                      "bbox_reward_last_quarter": sum(last) / max(1, len(last)),
                      "sync_share_mean": sum(r["time/sync_share"] for r in rows) / len(rows)}
    return final


def rebuild_learners(dead: LearnerGroup, new_learners, rl_dir: Path, exc: LearnerLost, faults: FaultLog) -> LearnerGroup:
    """A learner rank died or hung: stop the whole group (its ranks share one process group) and
    start a new one; train_rl then loads the last RL checkpoint into it and replays from there."""
    t0 = time.monotonic()
    log.error("stage4: %s; rebuilding the learner group", exc)
    dead.shutdown()
    learners = new_learners()
    latest = rl_dir / "checkpoints" / "latest"
    start = latest.read_text().strip() if latest.exists() else "the SFT policy (no RL checkpoint yet)"
    faults.record("learner", what=str(exc), recovery_s=time.monotonic() - t0,
                  action=f"rebuilt the learner group; replaying from {start}")
    return learners


def run_eval(cfg: RunConfig, models: dict[str, Path], eval_dir: Path, data_cache: Path, summary: RunSummary) -> None:
    for label, model_dir in models.items():
        results = evaluate(model_dir, list(cfg.eval.benchmarks), eval_dir / label, limit=cfg.eval.limit,
                           answer_format=cfg.rl.answer_format, rollout_cfg=cfg.rollout, data_cfg=cfg.data,
                           cache_dir=data_cache, max_tokens=cfg.rl.max_completion_tokens)
        summary.evals[label] = {f"{r.name}:{k}": v for r in results for k, v in r.metrics.items()}


def fitted(stage: str, demand: tuple[Reservation, ...], cfg: RunConfig, *, wait: bool = True) -> Fit:
    """The stage's fit on the cluster now; a stage that cannot fit stops the run with the message."""
    try:
        return check_fit(stage, demand, cfg.cluster, wait=wait)
    except ClusterTooSmall as exc:
        raise SystemExit(f"error: {exc}") from None  # the message says it all: no traceback


def check_stages_fit(cfg: RunConfig, stages: tuple[str, ...]) -> None:
    """Fail in seconds, not after hours of SFT, when a stage to run cannot fit the cluster. An
    autoscaling cluster (cluster.autoscaler_wait_s > 0) may still grow: its stages wait in turn."""
    if cfg.cluster.autoscaler_wait_s > 0:
        return
    for stage in stages:
        if stage in SFT_STAGES and getattr(cfg.sft, stage).enabled:
            fitted(stage, sft_demand(cfg.sft), cfg, wait=False)
        elif stage == "stage4" and cfg.rl.enabled:
            fitted(stage, rl_demand(cfg), cfg, wait=False)


def run_pipeline(cfg: RunConfig, stages: tuple[str, ...] = ("stage1", "stage2", "stage3", "stage4", "eval")) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per reward request drowns the progress bar
    unknown = set(stages) - {*SFT_STAGES, "stage4", "eval"}
    if unknown:
        raise SystemExit(f"--stages: unknown {sorted(unknown)}; allowed: stage1, stage2, stage3, stage4, eval")
    run_dir, moved = run_dir_for(cfg)
    print(f"run directory: {run_dir}", flush=True)  # first, so a user of `ray job submit` knows where to look
    if moved:
        log.warning("%s", moved)
    try:
        check_run_dir(run_dir, cfg.min_free_gib)
    except BadRunDir as exc:
        raise SystemExit(f"error: {exc}") from None
    (run_dir / "config.yaml").write_text(dump_yaml(cfg))
    summary = RunSummary(run_dir)
    if moved:
        summary.notes.append(moved)
    t0 = time.perf_counter()
    summary.notes.append("Ray: " + init_ray(cfg.cluster))
    print(summary.notes[-1], flush=True)
    start_gcs_watchdog(cfg.cluster.lost_after_s)
    check_stages_fit(cfg, stages)
    data_cache = run_dir / "data"
    base = resolve_model(cfg.model.path, run_dir / "base", cfg.model.tiny_seed)
    summary.stage_seconds["setup"] = time.perf_counter() - t0
    policy = base
    models = {"base": base}
    for i, stage in enumerate(SFT_STAGES):
        st = getattr(cfg.sft, stage)
        final = run_dir / "sft" / stage / "final"
        if not st.enabled:
            continue
        if stage not in stages:
            policy = final if (final / "DONE").exists() else policy
            continue
        t = time.perf_counter()
        sft_cfg = cfg.sft
        if not (final / "DONE").exists():  # a finished stage (it skips itself) reserves nothing
            fit = fitted(stage, sft_demand(cfg.sft), cfg)
            log_scaling(fit)
            sft_cfg = scale_sft(cfg.sft, fit.factor)
        policy = run_stage(stage, st, sft_cfg, cfg.data, seed=cfg.seed + i, init_dir=policy,
                           stage_dir=run_dir / "sft" / stage, data_cache_dir=data_cache, dtype=cfg.model.dtype)
        summary.stage_seconds[f"sft {stage}"] = time.perf_counter() - t
    models["sft"] = policy
    if cfg.rl.enabled and "stage4" in stages:
        t = time.perf_counter()
        fit = fitted("stage4", rl_demand(cfg), cfg)
        log_scaling(fit)
        if fit.factor < 1:
            summary.notes.append(f"stage4: CPU reservations scaled by {fit.factor:.4g} to fit "
                                 f"{fit.supply.cpus:g} CPUs (demand {fit.demand_cpus:g})")
        try:
            policy = run_rl_stage(scale_rl(cfg, fit.factor), Path(policy), run_dir / "rl", data_cache, summary)
        except Preempted as exc:
            summary.stage_seconds["rl stage4"] = time.perf_counter() - t
            summary.notes.append(str(exc))
            (run_dir / "summary.md").write_text(summary.markdown())
            print(f"\n{exc}", flush=True)
            return EXIT_PREEMPTED
        summary.stage_seconds["rl stage4"] = time.perf_counter() - t
        models["rl"] = policy
    elif cfg.rl.enabled and (run_dir / "rl" / "final" / "DONE").exists():  # e.g. --stages eval after a finished run
        policy = models["rl"] = run_dir / "rl" / "final"
    if cfg.eval.enabled and "eval" in stages:
        t = time.perf_counter()
        wanted = {k: Path(v) for k, v in models.items() if k in cfg.eval.models}
        run_eval(cfg, wanted, run_dir / "eval", data_cache, summary)
        summary.stage_seconds["eval"] = time.perf_counter() - t
    summary.notes.append(f"final model: {policy}")
    summary.notes.append(f"plots: {run_dir / 'rl' / 'reward_curve.png'}, {run_dir / 'sft'}/*/loss.png; "
                         f"metrics: */metrics.jsonl, TensorBoard: */tensorboard")
    text = summary.markdown()
    (run_dir / "summary.md").write_text(text)
    (run_dir / "summary.json").write_text(strict_json({"run_dir": str(run_dir), "stage_seconds": summary.stage_seconds,
                                                      "evals": summary.evals, "rl": summary.rl,
                                                      "final_model": str(policy)}, indent=1))
    print("\n" + text)
    return 0
