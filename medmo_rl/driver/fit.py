"""Does a stage fit the Ray cluster? What each stage reserves, and the rule that shrinks it.

    demand = rl_demand(cfg)                        # or sft_demand(cfg.sft)
    f = fit("stage4", demand, Supply(cpus=2, gpus=0), fractional=True)
    if f.problem: raise SystemExit(f.problem)
    cfg = scale_rl(cfg, f.factor)                  # every CPU reservation × f.factor

The rule (issue 16). A stage reserves C logical CPUs and G GPUs (the sum over the actors it starts,
see `Reservation`); the cluster offers C_s CPUs and G_s GPUs in total.
  - G > G_s: it cannot fit — a GPU is never shared fractionally.
  - C ≤ C_s: it fits as configured (factor 1).
  - C > C_s and fractional CPUs allowed (cluster.fractional_cpus): every CPU reservation of the
    stage is multiplied by factor = C_s / C, rounded DOWN to Ray's resource quantum, so the
    scaled reservations sum to at most C_s and every actor starts. Ray CPUs are logical: the
    actors still run ≥ 1 thread each, only the cores are shared.
  - C > C_s otherwise: it cannot fit.
C counts `cluster.rollout_headroom` extra rollout workers (CPUs only), so that growing the rollout
pool at runtime (python -m medmo_rl.control) by that many finds room instead of waiting forever.
Totals only: a node too small for one actor is not detected here (Ray reports it as infeasible).

Pure: configs in, numbers out; no Ray (medmo_rl/driver/cluster.py asks the cluster).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

from medmo_rl.config import RunConfig, SFTConfig

RAY_RESOURCE_QUANTUM = 1e-4  # Ray stores resource amounts as fixed point with 4 decimals


@dataclass(frozen=True)
class Reservation:
    """`count` actors of one kind, each reserving `cpus` logical CPUs and `gpus` GPUs."""

    what: str  # "learner", "rollout worker", ...
    count: int
    cpus: float
    gpus: float
    keys: tuple[str, ...]  # the config keys that set count, cpus and gpus

    def describe(self) -> str:
        gpu = f" + {self.gpus:g} GPU" if self.gpus else ""
        return f"{self.count} {self.what} × {self.cpus:g} CPU{gpu} ({', '.join(self.keys)})"


@dataclass(frozen=True)
class Supply:
    cpus: float  # logical CPUs of the whole cluster (ray.cluster_resources()["CPU"])
    gpus: float


@dataclass(frozen=True)
class Fit:
    stage: str
    demand_cpus: float
    demand_gpus: float
    supply: Supply
    factor: float  # multiply every CPU reservation by this (1.0: as configured)
    problem: str  # "" when the stage fits (after scaling); else the message to stop the run with


def sft_demand(sft: SFTConfig) -> tuple[Reservation, ...]:
    """Ray Train's workers (its controller and the job's driver reserve nothing)."""
    return (Reservation("Ray Train worker", sft.num_workers, sft.cpus_per_worker, 1.0 if sft.use_gpu else 0.0,
                        ("sft.num_workers", "sft.cpus_per_worker", "sft.use_gpu")),)


def rl_demand(cfg: RunConfig) -> tuple[Reservation, ...]:
    """Learners, rollout workers (+ headroom for a runtime resize), Ray Serve reward replicas.

    The uvicorn reward service is a child process of the driver and the control actor asks for
    0 CPUs: neither reserves anything.
    """
    rl, ro, rw = cfg.rl, cfg.rollout, cfg.reward
    parts = [
        Reservation("learner", rl.num_learners, rl.cpus_per_learner, 1.0 if rl.use_gpu else 0.0,
                    ("rl.num_learners", "rl.cpus_per_learner", "rl.use_gpu")),
        Reservation("rollout worker", ro.num_workers, ro.cpus_per_worker, ro.gpus_per_worker,
                    ("rollout.num_workers", "rollout.cpus_per_worker", "rollout.gpus_per_worker")),
        # CPUs only: GPUs cannot be scaled, so a resize onto GPUs needs free GPUs (or the autoscaler)
        Reservation("spare rollout worker", cfg.cluster.rollout_headroom, ro.cpus_per_worker, 0.0,
                    ("cluster.rollout_headroom", "rollout.cpus_per_worker")),
    ]
    if rw.service == "serve":
        parts.append(Reservation("reward replica", rw.replicas, rw.cpus_per_replica, 0.0,
                                 ("reward.replicas", "reward.cpus_per_replica")))
    return tuple(p for p in parts if p.count)


def cpu_scale(demand_cpus: float, supply_cpus: float) -> float:
    """factor = min(1, C_s / C): the share of its CPU reservation each actor keeps (C = 0 → 1)."""
    if demand_cpus <= supply_cpus or demand_cpus == 0:
        return 1.0
    return supply_cpus / demand_cpus


def scaled_cpus(cpus: float, factor: float) -> float:
    """⌊cpus · factor / q⌋ · q with q = 1e-4 (Ray's quantum), never below q for a non-zero
    reservation (the floor only binds past 10,000 actors per CPU). Rounding down keeps Σ scaled ≤ C_s;
    rounding to nearest could overshoot by one quantum and leave the last actor pending. The 1e-9
    absorbs float error (0.49999999 → 0.5)."""
    if cpus == 0 or factor >= 1:
        return cpus
    q = RAY_RESOURCE_QUANTUM
    return round(max(1, math.floor(cpus * factor / q + 1e-9)) * q, 4)


def fit(stage: str, demand: Sequence[Reservation], supply: Supply, *, fractional: bool) -> Fit:
    """Apply the rule of this module's docstring."""
    cpus = sum(r.count * r.cpus for r in demand)
    gpus = sum(r.count * r.gpus for r in demand)
    problem = ""
    if gpus > supply.gpus:
        problem = "a GPU is never shared fractionally"
        keys = [k for r in demand if r.gpus for k in r.keys]
    elif cpus > supply.cpus and supply.cpus <= 0:
        problem = "the cluster has no CPUs to share"
        keys = [k for r in demand if r.cpus for k in r.keys]
    elif cpus > supply.cpus and not fractional:
        problem = "fractional CPU reservations are off (cluster.fractional_cpus=false)"
        keys = [k for r in demand if r.cpus for k in r.keys] + ["cluster.fractional_cpus"]
    if problem:
        problem = (f"{stage} does not fit the Ray cluster: it reserves {cpus:g} CPUs and {gpus:g} GPUs "
                   f"[{'; '.join(r.describe() for r in demand)}], the cluster offers {supply.cpus:g} CPUs and "
                   f"{supply.gpus:g} GPUs, and {problem}. Change {', '.join(dict.fromkeys(keys))}, "
                   f"or run on a bigger cluster.")
        return Fit(stage, cpus, gpus, supply, 1.0, problem)
    return Fit(stage, cpus, gpus, supply, cpu_scale(cpus, supply.cpus) if fractional else 1.0, "")


def scale_sft(sft: SFTConfig, factor: float) -> SFTConfig:
    return dataclasses.replace(sft, cpus_per_worker=scaled_cpus(sft.cpus_per_worker, factor))


def scale_rl(cfg: RunConfig, factor: float) -> RunConfig:
    """The RL stage's config with every CPU reservation scaled (the rollout pool keeps
    cfg.rollout for workers added by a resize, so they get the scaled reservation too)."""
    return dataclasses.replace(
        cfg,
        rl=dataclasses.replace(cfg.rl, cpus_per_learner=scaled_cpus(cfg.rl.cpus_per_learner, factor)),
        rollout=dataclasses.replace(cfg.rollout, cpus_per_worker=scaled_cpus(cfg.rollout.cpus_per_worker, factor)),
        reward=dataclasses.replace(cfg.reward, cpus_per_replica=scaled_cpus(cfg.reward.cpus_per_replica, factor)))


def max_rollout_workers(cfg: RunConfig, supply: Supply) -> tuple[int, str]:
    """→ (the most rollout workers the RL stage of `cfg` (already scaled) can hold on `supply`, why).

    n_max = ⌊(C_s − C_other) / c_w⌋, and ⌊(G_s − G_other) / g_w⌋ too where workers take GPUs, with
    C_other, G_other what the stage reserves besides rollout workers and c_w, g_w one worker's share.
    A resize beyond it would wait forever for a worker Ray cannot place (python -m medmo_rl.control
    refuses it instead)."""
    ro = cfg.rollout
    other = [r for r in rl_demand(cfg) if r.what not in ("rollout worker", "spare rollout worker")]
    c_other, g_other = sum(r.count * r.cpus for r in other), sum(r.count * r.gpus for r in other)
    limits = []
    if ro.cpus_per_worker > 0:
        limits.append(math.floor((supply.cpus - c_other) / ro.cpus_per_worker + 1e-9))
    if ro.gpus_per_worker > 0:
        limits.append(math.floor((supply.gpus - g_other) / ro.gpus_per_worker + 1e-9))
    n = max(0, min(limits)) if limits else 2**31 - 1
    why = (f"the cluster has {supply.cpus:g} CPUs and {supply.gpus:g} GPUs, the rest of the RL stage reserves "
           f"{c_other:g} CPUs and {g_other:g} GPUs, and each rollout worker {ro.cpus_per_worker:g} CPU + "
           f"{ro.gpus_per_worker:g} GPU (rollout.cpus_per_worker, rollout.gpus_per_worker)")
    return n, why
