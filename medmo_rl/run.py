"""The MedMO pipeline as one job: SFT stages 1–3 (Ray Train) → RL (stage 4) → eval.

    python -m medmo_rl.run                       # the embedded tiny default (configs/tiny.yaml)
    python -m medmo_rl.run --config configs/medmo_8b.yaml model.path=/models/Qwen3-VL-8B-Instruct
    ray job submit -- python -m medmo_rl.run     # same, inside a Ray cluster
    python -m medmo_rl.run --dry-run rl.num_generations=4   # validate + print the stage plan

Every run leaves one run directory (resolved config, metrics, checkpoints, plots, summary); rerunning
the same command resumes from the last completed stage and step.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from medmo_rl.config import ConfigError, RunConfig, default_config_path, dump_yaml, load_config
from medmo_rl.driver.run_dir import run_dir_for


@dataclass(frozen=True)
class StagePlan:
    name: str
    kind: str  # "sft" | "rl" | "eval"
    enabled: bool
    detail: str


def stage_plan(cfg: RunConfig) -> list[StagePlan]:
    plan = []
    for i, st in enumerate((cfg.sft.stage1, cfg.sft.stage2, cfg.sft.stage3), 1):
        steps = f"{st.max_steps} steps" if st.max_steps else f"{st.epochs:g} epoch(s)"
        plan.append(StagePlan(
            f"stage{i}", "sft", st.enabled,
            f"Ray Train x{cfg.sft.num_workers}: {steps}, batch {st.batch_size}x{st.grad_accum}, lr {st.lr:g} "
            f"{st.lr_scheduler}, max_pixels {st.max_pixels}, mixture {dict(st.mixture) or '{}'}"))
    rl = cfg.rl
    plan.append(StagePlan(
        "stage4", "rl", rl.enabled,
        f"DAPO G={rl.num_generations} eps=({rl.eps_low:g},{rl.eps_high:g}), "
        f"{rl.max_steps or f'{rl.epochs:g} epochs'} steps; {cfg.rollout.num_workers} rollout worker(s), "
        f"{rl.num_learners} learner(s), reward service={cfg.reward.service} x{cfg.reward.replicas}; "
        f"train_set {rl.train_set}"))
    plan.append(StagePlan("eval", "eval", cfg.eval.enabled,
                          f"benchmarks {', '.join(cfg.eval.benchmarks)} (limit {cfg.eval.limit or 'none'})"))
    return plan


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m medmo_rl.run",
        description="Run the MedMO post-training recipe (SFT 1-3 on Ray Train, RL with vLLM rollout "
                    "actors, an HTTP reward service and DAPO learners, then eval) as one Ray job.",
        epilog="Overrides are dotted keys, e.g. rl.num_generations=4 sft.stage2.lr=1e-4 rollout.num_workers=2.",
    )
    ap.add_argument("--config", default=None, help=f"recipe YAML (default: {default_config_path()})")
    ap.add_argument("--dry-run", action="store_true", help="validate the config, print the resolved stage plan, exit")
    ap.add_argument("--stages", default="stage1,stage2,stage3,stage4,eval",
                    help="comma-separated subset of stages to run (default: all enabled)")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides key=value")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(f"# resolved config ({args.config or default_config_path()})")
        print(dump_yaml(cfg))
        run_dir, moved = run_dir_for(cfg)
        print(f"# stage plan → run directory {run_dir}" + (f"  ({moved})" if moved else ""))
        for st in stage_plan(cfg):
            print(f"  {st.name:7s} [{st.kind:4s}] {'on ' if st.enabled else 'off'}  {st.detail}")
        return 0
    from medmo_rl.driver.pipeline import run_pipeline  # here: --help and --dry-run start no Ray, torch or vLLM

    wanted = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    return run_pipeline(cfg, stages=wanted)


if __name__ == "__main__":
    sys.exit(main())
