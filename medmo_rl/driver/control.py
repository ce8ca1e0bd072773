"""Resize the rollout pool of a RUNNING job (its learners are untouched).

    python -m medmo_rl.control --name tiny --rollout-workers 2 [--address auto]

The RL stage starts a named Ray actor `medmo-control-<name>` (`Control`); this CLI talks to it and
the RL loop applies the new size at the start of its next step and logs `rollout/num_workers`.
"""
from __future__ import annotations

import argparse
import sys

import ray

from medmo_rl.driver.cluster import RAY_NAMESPACE

CONTROL_ACTOR = "medmo-control-{name}"


class ResizeRefused(ValueError):
    """A resize the cluster cannot hold (or a size below 1): the pool keeps its size."""


class Control:
    """A named actor the operator talks to while a job runs (python -m medmo_rl.control).

    `max_workers` (driver/fit.py max_rollout_workers, None on an autoscaling cluster): a larger
    size is refused with `why`, instead of a worker that would wait forever to be placed."""

    def __init__(self, rollout_workers: int, max_workers: int | None = None, why: str = ""):
        self.rollout_workers, self.max_workers, self.why = rollout_workers, max_workers, why

    def set_rollout_workers(self, n: int) -> int:
        if n < 1:
            raise ResizeRefused("rollout workers must be >= 1")
        if self.max_workers is not None and n > self.max_workers:
            raise ResizeRefused(f"{n} rollout workers do not fit: {self.why}, so at most {self.max_workers} fit; "
                                f"the pool stays at {self.rollout_workers}. Add nodes, or lower those keys.")
        self.rollout_workers = n
        return n

    def get_rollout_workers(self) -> int:
        return self.rollout_workers


def start_control(name: str, rollout_workers: int, max_workers: int | None = None, why: str = ""):
    """The job's Control actor (detached, so the CLI can find it by name)."""
    return ray.remote(num_cpus=0)(Control).options(
        name=CONTROL_ACTOR.format(name=name), get_if_exists=True, lifetime="detached"
    ).remote(rollout_workers, max_workers, why)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m medmo_rl.control", description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", default="tiny", help="the run's config `name`")
    ap.add_argument("--address", default="auto", help="Ray cluster address (default: the running one)")
    ap.add_argument("--rollout-workers", type=int, default=None, help="new number of vLLM rollout workers")
    args = ap.parse_args(argv)
    ray.init(address=args.address, namespace=RAY_NAMESPACE, log_to_driver=False)
    try:
        actor = ray.get_actor(CONTROL_ACTOR.format(name=args.name))
    except ValueError:
        print(f"no running RL stage named {args.name!r} on this cluster", file=sys.stderr)
        return 1
    if args.rollout_workers is not None:
        try:
            ray.get(actor.set_rollout_workers.remote(args.rollout_workers))
        except ray.exceptions.RayTaskError as exc:
            if not isinstance(exc.cause, ResizeRefused):
                raise
            print(f"refused: {exc.cause}", file=sys.stderr)
            return 2
    print(f"rollout workers: {ray.get(actor.get_rollout_workers.remote())}")
    return 0
