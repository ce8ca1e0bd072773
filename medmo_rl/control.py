"""Resize the rollout pool of a RUNNING job (its learners are untouched).

    python -m medmo_rl.control --name tiny --rollout-workers 2 [--address auto]

Talks to the job's named Ray actor `medmo-control-<name>`; the RL loop applies the new size at
the start of its next step and logs `rollout/num_workers`.
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    import ray

    ap = argparse.ArgumentParser(prog="python -m medmo_rl.control", description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", default="tiny", help="the run's config `name`")
    ap.add_argument("--address", default="auto", help="Ray cluster address (default: the running one)")
    ap.add_argument("--rollout-workers", type=int, default=None, help="new number of vLLM rollout workers")
    args = ap.parse_args(argv)
    from medmo_rl.pipeline import CONTROL_ACTOR, RAY_NAMESPACE

    ray.init(address=args.address, namespace=RAY_NAMESPACE, log_to_driver=False)
    try:
        actor = ray.get_actor(CONTROL_ACTOR.format(name=args.name))
    except ValueError:
        print(f"no running RL stage named {args.name!r} on this cluster", file=sys.stderr)
        return 1
    if args.rollout_workers is not None:
        ray.get(actor.set_rollout_workers.remote(args.rollout_workers))
    print(f"rollout workers: {ray.get(actor.get_rollout_workers.remote())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
