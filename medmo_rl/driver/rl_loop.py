"""Stage 4: the RL loop — GRPO with DAPO's clip-higher token-level loss (paper Sec. 3.5, App. B.4).

One step, top to bottom (each phase one function below):

    scale      resize the rollout pool if the operator asked (python -m medmo_rl.control)
    collect    prompts ─▶ rollout pool (G completions each, vLLM actors; prompts longer than
               rl.max_prompt_tokens refused before generation, counted with their ids)
               ─▶ reward service over HTTP ─▶ group advantages ─▶ drop zero-std groups, refill from further prompts (dynamic sampling, ≤ rl.max_extra_rounds rounds)
    learn      learner group (DDP ranks): old log-probs, DAPO update(s)
    sync       new weights ─▶ every rollout actor (versioned, verified by a log-prob probe)
    log        metrics JSONL + TensorBoard
    checkpoint every rl.checkpoint_every steps, atomically (write, then rename); on SIGTERM: at the
               end of the step, then stop (Preempted): the same command resumes

With rl.max_staleness = k ≥ 1 the same phases run on another schedule (`Rollouts`): scale + collect
of the steps s+1 … s+k run in a thread while step s learns, and the loss weighs those completions
by decoupled PPO's behaviour weight (medmo_rl/algos.behaviour_weights).

Files to follow one step from the YAML to the loss: configs/tiny.yaml → medmo_rl/config.py (RLConfig)
→ this file → medmo_rl/driver/learner_group.py → medmo_rl/learner.py → medmo_rl/algos.py (dapo_policy_loss).
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch

from medmo_rl.algos import group_advantages, zero_std_groups
from medmo_rl.config import RunConfig
from medmo_rl.learner import LearnStats
from medmo_rl.records import Group, SamplingSpec, TrainItem
from medmo_rl.sampler import PromptSampler, SamplerState
from medmo_rl.schema import Sample
from rewards.composite import PARTS, ScoreItem


@dataclass(frozen=True)
class ScoredGroup:
    group: Group
    rewards: tuple[float, ...]  # [G] totals; NaN where scoring failed
    parts: tuple[dict[str, float], ...]  # [G] reward parts


@dataclass
class StepBatch:
    """What one step trains on, plus what it cost to get it."""

    groups: list[ScoredGroup] = field(default_factory=list)
    drawn_ids: list[str] = field(default_factory=list)  # every prompt drawn this step, in order
    generated_groups: int = 0
    zero_std_groups: int = 0
    failed_requests: int = 0
    failed_scores: int = 0
    scored: int = 0
    completion_tokens: int = 0
    t_rollout: float = 0.0
    t_reward: float = 0.0
    all_rewards: list[float] = field(default_factory=list)  # every finite total, kept or not
    all_parts: list[dict[str, float]] = field(default_factory=list)
    all_tasks: list[str] = field(default_factory=list)  # the task of each all_parts entry
    rejected_ids: list[str] = field(default_factory=list)  # prompts longer than rl.max_prompt_tokens
    lengths: list[int] = field(default_factory=list)
    truncated: int = 0
    sampler_after: SamplerState = field(default_factory=SamplerState)  # where the next step's draw starts
    epoch: float = 0.0  # epochs of the train set drawn once this batch was


log = logging.getLogger("medmo_rl")


class Preempted(Exception):
    """SIGTERM (`ray job stop`, a preempted node) stopped the RL stage at a step boundary, checkpointed."""

    def __init__(self, step: int, checkpoint: Path):
        super().__init__(f"stopped by SIGTERM after RL step {step}; checkpoint {checkpoint}. "
                         f"Run the same command again to resume from it.")
        self.step, self.checkpoint = step, checkpoint


class StopOnSigterm:
    """While active, SIGTERM only sets `requested`: the loop checkpoints at the end of the step it is
    in and stops (Preempted), instead of dying mid-update and losing the steps since the last
    checkpoint. A second SIGTERM is the default one (exit now). Main thread only."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self) -> StopOnSigterm:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        self.requested = True
        log.warning("SIGTERM: finishing this RL step, then checkpointing and stopping (again: exit now)")

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


@dataclass
class RLState:
    step: int = 0
    version: int = 0  # weight version the rollout actors serve
    sampler: SamplerState = field(default_factory=SamplerState)


# ------------------------------------------------------------------------------------------------
def prompts_per_step(cfg: RunConfig) -> int:
    rl = cfg.rl
    if rl.prompts_per_step:
        return rl.prompts_per_step
    completions = rl.batch_size * rl.grad_accum * rl.mini_batches * rl.num_learners
    return max(1, completions // rl.num_generations)


def total_steps(cfg: RunConfig, num_prompts: int) -> int:
    if cfg.rl.max_steps:
        return cfg.rl.max_steps
    return max(1, math.ceil(cfg.rl.epochs * num_prompts / prompts_per_step(cfg)))


def collect_phase(cfg: RunConfig, sampler: PromptSampler[Sample], pool, client) -> StepBatch:
    """Rollout + score + dynamic-sampling filter until `prompts_per_step` groups carry signal."""
    rl, want = cfg.rl, prompts_per_step(cfg)
    sampling = SamplingSpec(n=rl.num_generations, max_tokens=rl.max_completion_tokens,
                            temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                            max_prompt_tokens=rl.max_prompt_tokens)
    out = StepBatch()
    for round_ in range(1 + (rl.max_extra_rounds if rl.dynamic_sampling else 0)):
        need = want - len(out.groups)
        if need <= 0:
            break
        samples = sampler.take(need)
        out.drawn_ids += [s.id for s in samples]
        t0 = time.perf_counter()
        groups = pool.generate(samples, sampling, rl.answer_format)
        out.t_rollout += time.perf_counter() - t0
        # the rollout refuses prompts over rl.max_prompt_tokens before generating; the check here
        # also holds for an engine that generated them anyway
        ok = [g for g in groups if g.error is None and g.completions and len(g.prompt_token_ids) <= rl.max_prompt_tokens]
        too_long = [g for g in groups if g.prompt_too_long or (g.error is None and len(g.prompt_token_ids) > rl.max_prompt_tokens)]
        out.rejected_ids += [g.sample.id for g in too_long]
        out.failed_requests += len(groups) - len(ok) - len(too_long)
        items = [ScoreItem(c.text, len(c.token_ids), g.sample) for g in ok for c in g.completions]
        t0 = time.perf_counter()
        results = client.score(items) if items else []
        out.t_reward += time.perf_counter() - t0
        out.scored += len(results)
        out.failed_scores += sum(r.error is not None for r in results)
        k = 0
        scored = []
        for g in ok:
            rs = results[k : k + len(g.completions)]
            k += len(g.completions)
            scored.append(ScoredGroup(g, tuple(r.total for r in rs), tuple(r.parts for r in rs)))
            for c, r in zip(g.completions, rs):
                out.lengths.append(len(c.token_ids))
                out.truncated += c.finish_reason == "length"
                out.completion_tokens += len(c.token_ids)
                if r.error is None:
                    out.all_rewards.append(r.total)
                    out.all_parts.append(r.parts)
                    out.all_tasks.append(g.sample.task)
        out.generated_groups += len(scored)
        if out.scored and out.failed_scores / out.scored > cfg.reward.max_failed_fraction:
            raise RuntimeError(
                f"{out.failed_scores}/{out.scored} completions could not be scored (reward.max_failed_fraction="
                f"{cfg.reward.max_failed_fraction}); is the reward service at {getattr(client, 'url', '?')} up?")
        if not scored:
            continue
        flat = torch.tensor([list(sg.rewards) for sg in scored], dtype=torch.float64)
        dead = zero_std_groups(flat).tolist() if rl.dynamic_sampling else [False] * len(scored)
        out.zero_std_groups += sum(dead)
        out.groups += [sg for sg, d in zip(scored, dead) if not d][:need]
    out.sampler_after, out.epoch = sampler.state, sampler.epochs_done
    return out


def to_train_items(cfg: RunConfig, groups: list[ScoredGroup], version: int = 0) -> list[TrainItem]:
    """Group-normalised advantages (eq. 5) per completion; NaN rewards → advantage 0.

    `version`: the learner's weight version; a completion generated by an older one is `staleness`
    versions behind (only with rl.max_staleness ≥ 1), which the loss corrects for."""
    if not groups:
        return []
    adv = group_advantages(torch.tensor([list(sg.rewards) for sg in groups], dtype=torch.float64),
                           scale=cfg.rl.scale_advantages)
    items = []
    for sg, a_row in zip(groups, adv.tolist()):
        for c, a in zip(sg.group.completions, a_row):
            truncated = c.finish_reason == "length"
            items.append(TrainItem(sample=sg.group.sample, prompt_token_ids=sg.group.prompt_token_ids,
                                   completion_token_ids=c.token_ids, engine_logprobs=c.logprobs, advantage=a,
                                   loss_mask=not (cfg.rl.mask_truncated and truncated) and len(c.token_ids) > 0,
                                   staleness=version - c.weight_version))
    stale = max((it.staleness for it in items), default=0)
    if stale > cfg.rl.max_staleness or stale < 0:  # the schedule (Rollouts) rules this out: a bug, never data
        raise RuntimeError(f"completions {stale} weight versions behind the learner (version {version}); "
                           f"rl.max_staleness={cfg.rl.max_staleness}")
    return items


def learn_phase(learners, items: list[TrainItem]) -> LearnStats | None:
    if not items or all(not it.loss_mask for it in items):
        return None
    return learners.train_step(items)


@dataclass(frozen=True)
class SyncTiming:
    total_s: float = 0.0
    export_s: float = 0.0  # learner rank 0: weights into the object store + its probe log-probs
    load_s: float = 0.0  # slowest rollout actor: weights into the engine
    probe_s: float = 0.0  # slowest rollout actor: the verifying probe


def sync_phase(learners, pool, probe, version: int, *, rewind: bool = False) -> SyncTiming:
    """Push the learners' weights to every rollout actor as `version`; the probe verifies them.
    `rewind`: the run went back to a checkpoint, so `version` may be older than the actors'."""
    t0 = time.perf_counter()
    bucket_refs, expected = learners.export_weights(probe)
    t1 = time.perf_counter()
    updates = pool.push_weight_refs(version, bucket_refs, expected_probe=expected, rewind=rewind)
    return SyncTiming(total_s=time.perf_counter() - t0, export_s=t1 - t0,
                      load_s=max((u.load_s for u in updates), default=0.0),
                      probe_s=max((u.probe_s for u in updates), default=0.0))


@dataclass(frozen=True)
class LoopTiming:
    """Where one step's wall time went, from the loop's side (the phases' own times are in StepBatch / SyncTiming)."""

    step_s: float = 0.0
    learn_s: float = 0.0
    rollout_wait_s: float = 0.0  # the learners idled this long for the step's batch
    pool_wait_s: float = 0.0  # … and this long for the rollout thread to free the pool for the sync
    overlap_s: float = 0.0  # seconds of the learn phase during which rollouts were being collected


def part_mean(batch: StepBatch, part: str) -> float:
    """Mean of one reward part over the scored completions; the bbox part over grounding items
    only, since every other task reports it as 0.0 (rewards/composite.py)."""
    xs = [ps[part] for ps, task in zip(batch.all_parts, batch.all_tasks)
          if part in ps and (part != "bbox" or task == "grounding")]
    return sum(xs) / len(xs) if xs else float("nan")


def step_metrics(batch: StepBatch, learn: LearnStats | None, items: list[TrainItem], timing: LoopTiming,
                 sync: SyncTiming, version: int, pool, learner_restarts: int = 0) -> dict:
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")
    stale = [it.staleness for it in items if it.loss_mask]
    m = {
        "reward/total": mean(batch.all_rewards),
        **{f"reward/{p}": part_mean(batch, p) for p in PARTS},
        "reward/total_trained": mean([r for sg in batch.groups for r in sg.rewards if math.isfinite(r)]),
        "adv/abs_mean": mean([abs(it.advantage) for it in items]),
        "rollout/staleness_mean": mean(stale),
        "rollout/staleness_max": max(stale, default=0),
        "rollout/response_length": mean(batch.lengths),
        "rollout/truncation_rate": batch.truncated / max(1, len(batch.lengths)),
        "rollout/rejected_long_prompts": len(batch.rejected_ids),
        "rollout/rejected_ids": batch.rejected_ids,
        "filter/zero_std_fraction": batch.zero_std_groups / max(1, batch.generated_groups),
        "filter/pass_rate": len(batch.groups) / max(1, batch.generated_groups),
        "filter/groups_trained": len(batch.groups),
        "errors/failed_requests": batch.failed_requests,
        "errors/failed_scores": batch.failed_scores,
        "time/rollout_s": batch.t_rollout,
        "time/reward_s": batch.t_reward,
        "time/learn_s": timing.learn_s,
        "time/rollout_wait_s": timing.rollout_wait_s,
        "time/pool_wait_s": timing.pool_wait_s,
        "time/overlap_s": timing.overlap_s,
        "time/sync_s": sync.total_s,
        "time/sync_export_s": sync.export_s,
        "time/sync_load_s": sync.load_s,
        "time/sync_probe_s": sync.probe_s,
        "time/step_s": timing.step_s,
        "time/sync_share": sync.total_s / max(1e-9, timing.step_s),
        "throughput/rollout_tokens_per_s": batch.completion_tokens / max(1e-9, batch.t_rollout),
        "weight_version": version,
        "rollout/num_workers": pool.num_workers,
        "rollout/restarts": pool.restarts,  # actors replaced after dying, since the stage started
        "faults/learner_restarts": learner_restarts,  # learner groups rebuilt from a checkpoint, since the stage started
        "epoch": batch.epoch,
        "sample_ids": batch.drawn_ids,
    }
    if learn is not None:
        m.update({f"learn/{f.name}": getattr(learn, f.name) for f in fields(learn)})
    return m


def checkpoint_phase(ckpt_root: Path, state: RLState, learners) -> Path:
    """Atomic: everything goes to a temp folder that is renamed into place, then `latest` is replaced."""
    final = ckpt_root / f"step_{state.step:06d}"
    tmp = ckpt_root / f".tmp_step_{state.step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    learners.save(str(tmp / "learner"))
    (tmp / "state.json").write_text(json.dumps({"step": state.step, "version": state.version,
                                                "sampler": {"epoch": state.sampler.epoch, "index": state.sampler.index}}))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    latest_tmp = ckpt_root / ".latest.tmp"
    latest_tmp.write_text(final.name)
    os.replace(latest_tmp, ckpt_root / "latest")
    return final


def load_checkpoint(ckpt_root: Path) -> tuple[RLState, Path] | None:
    latest = ckpt_root / "latest"
    if not latest.exists():
        return None
    path = ckpt_root / latest.read_text().strip()
    d = json.loads((path / "state.json").read_text())
    return RLState(d["step"], d["version"], SamplerState(**d["sampler"])), path


# ------------------------------------------------------------------------------------------------
def scale_phase(pool, desired_rollout_workers) -> None:
    """Resize the rollout pool when the operator asked for another size (python -m medmo_rl.control)."""
    if desired_rollout_workers is None:
        return
    want = desired_rollout_workers()
    if want != pool.num_workers:
        pool.resize(want)


def overlap_s(span: tuple[float, float], others: list[tuple[float, float]]) -> float:
    """Seconds of `span` = (start, end) that some interval of `others` also covers (they do not overlap
    each other): Σ_i max(0, min(end, e_i) − max(start, s_i))."""
    return sum(max(0.0, min(span[1], e) - max(span[0], s)) for s, e in others)


class Rollouts:
    """The batches of steps start … end−1, in order: the one place where rl.max_staleness = k acts.

    k = 0: `next()` collects the step's batch itself, after the previous step synced its weights
           (strictly on-policy, one phase after another, as the loop always ran).
    k ≥ 1: a thread collects ahead. Batch b starts once `step_done(b − k)` was called (steps ≤ b−k−1
           trained, synced, checkpointed), and step s syncs only after batch min(s+k, end−1) is
           collected (`wait_collected`). So the pool alternates collect b, sync b−k, collect b+1, …,
           never both at once, and batch b ran on the weights after step b−k−1: step b trains it
           after at most k more updates (staleness ≤ k, whatever the phases' speeds).
    A checkpoint records the state after the last TRAINED batch (StepBatch.sampler_after): a resumed
    run collects the lost read-ahead again and draws the same prompts in the same steps.
    """

    def __init__(self, collect: Callable[[], StepBatch], max_staleness: int, start: int, end: int):
        self.collect, self.k, self.end = collect, max_staleness, end
        self.intervals: list[tuple[float, float]] = []  # (start, end) of each collect, for the overlap metric
        self._ready: dict[int, StepBatch] = {}
        self._next, self._done, self._collected = start, start, start  # next batch to hand out, steps done, batches collected
        self._error: BaseException | None = None
        self._stop = False
        self._cv = threading.Condition()
        self._thread = None
        if self.k > 0:
            self._thread = threading.Thread(target=self._run, name="rollouts", daemon=True)
            self._thread.start()

    def recent_intervals(self) -> list[tuple[float, float]]:
        """The collects that can overlap the current step's learn phase (those of steps s+1 … s+k)."""
        return self.intervals[-(self.k + 2):]

    def _timed_collect(self) -> StepBatch:
        t0 = time.perf_counter()
        batch = self.collect()
        self.intervals.append((t0, time.perf_counter()))
        return batch

    def _run(self) -> None:
        try:
            for b in range(self._collected, self.end):
                with self._cv:
                    self._cv.wait_for(lambda: self._stop or self._done >= b - self.k)
                    if self._stop:
                        return
                batch = self._timed_collect()
                with self._cv:
                    self._ready[b] = batch
                    self._collected = b + 1
                    self._cv.notify_all()
        except BaseException as exc:  # handed to the loop's thread, which raises it
            with self._cv:
                self._error = exc
                self._cv.notify_all()

    def _wait(self, ready: Callable[[], bool], what: str) -> None:
        with self._cv:
            while not self._cv.wait_for(lambda: ready() or self._error is not None, timeout=30.0):
                if not self._thread.is_alive():
                    raise RuntimeError(f"the rollout thread ended while the loop waited for {what}")
            if self._error is not None:
                raise RuntimeError(f"collecting rollouts failed while the loop waited for {what}") from self._error

    def next(self) -> StepBatch:
        """The next step's batch (collected now when k = 0; waited for otherwise)."""
        b = self._next
        self._next += 1
        if self._thread is None:
            return self._timed_collect()
        self._wait(lambda: b in self._ready, f"the rollout batch of step {b + 1}")
        with self._cv:
            return self._ready.pop(b)

    def wait_collected(self, step: int) -> None:
        """Block until the pool is free for step `step`'s (0-based) weight sync."""
        if self._thread is not None:
            last = min(step + self.k, self.end - 1)
            self._wait(lambda: self._collected > last, f"the rollout batch of step {last + 1} before syncing weights")

    def step_done(self, steps_done: int) -> None:
        with self._cv:
            self._done = steps_done
            self._cv.notify_all()

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=60.0)  # it may sit in a generate call; the pool's shutdown ends that


def train_rl(cfg: RunConfig, policy_dir: Path, rl_dir: Path, train_samples: list[Sample], *, pool, learners,
             client, probe, metrics, progress: bool = True, desired_rollout_workers=None,
             learner_restarts: int = 0, monitor=None) -> RLState:
    """The loop, from the last checkpoint if there is one. `pool`, `learners`, `client` are live (see
    medmo_rl/driver/pipeline.py for the wiring; after a learner died it calls this again with new
    learners and the same pool: `learner_restarts` counts those calls). `monitor`
    (driver/monitor.py) samples the node's resources after the steps it is due."""
    ckpt_root = rl_dir / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    state = RLState()
    resumed = load_checkpoint(ckpt_root)
    if resumed is not None:
        state, path = resumed
        learners.load(str(path / "learner"))
    if resumed is not None or pool.weight_version != state.version:
        # the actors serve policy_dir (a new run) or a dead learner group's newer weights (a rewound one)
        sync_phase(learners, pool, probe, state.version, rewind=True)
    metrics.truncate_after(state.step)  # the steps after the checkpoint run again
    sampler = PromptSampler(train_samples, cfg.seed, state.sampler)
    n_steps = total_steps(cfg, len(train_samples))

    def collect() -> StepBatch:
        scale_phase(pool, desired_rollout_workers)
        return collect_phase(cfg, sampler, pool, client)

    rollouts = Rollouts(collect, cfg.rl.max_staleness, start=state.step, end=n_steps)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n_steps, initial=state.step, desc="RL (stage 4)", unit="step")
    try:
        with StopOnSigterm() as stop:
            while state.step < n_steps:
                t_step = time.perf_counter()
                batch = rollouts.next()
                t_learn = time.perf_counter()
                items = to_train_items(cfg, batch.groups, state.version)
                learn = learn_phase(learners, items)
                t_learned = time.perf_counter()
                rollouts.wait_collected(state.step)  # until then the pool belongs to the rollout thread
                t_sync = time.perf_counter()
                sync = SyncTiming()
                if learn is not None:
                    state.version += 1
                    sync = sync_phase(learners, pool, probe, state.version)
                state.step += 1
                state.sampler = batch.sampler_after
                timing = LoopTiming(step_s=time.perf_counter() - t_step, learn_s=t_learned - t_learn,
                                    rollout_wait_s=t_learn - t_step, pool_wait_s=t_sync - t_learned,
                                    overlap_s=overlap_s((t_learn, t_learned), rollouts.recent_intervals()))
                m = step_metrics(batch, learn, items, timing, sync, state.version, pool, learner_restarts)
                metrics.write(state.step, m)
                if monitor is not None:
                    monitor.sample(state.step)
                if state.step % cfg.rl.checkpoint_every == 0 or state.step == n_steps or stop.requested:
                    path = checkpoint_phase(ckpt_root, state, learners)
                    if stop.requested and state.step < n_steps:
                        raise Preempted(state.step, path)
                rollouts.step_done(state.step)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(reward=f"{m['reward/total']:.3f}", bbox=f"{m['reward/bbox']:.3f}",
                                    kept=f"{len(batch.groups)}")
    finally:
        rollouts.close()
        if bar is not None:
            bar.close()
    return state
