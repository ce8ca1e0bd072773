"""Benchmark of asynchronous RL: steps/s of the RL stage at rl.max_staleness 0, 1, 2 on ONE SFT checkpoint.

    python bench/rl_step_bench.py [--base runs/tiny] [--steps 12] [--variants k0,k1,k2,k1_shared] [overrides…]

Every variant is `python -m medmo_rl.run --stages stage4` in its own run directory whose base/,
data/ and sft/ link to the base run's (a finished `make run`), with the same steps, seed and
prompts per step; they run one after another in this one invocation. Prints, per variant, the
steady-state steps/s (steps after --warmup, whose first rollout includes the engine's warm-up),
its ratio to k0, the median phase times, and the ratio the k0 phase times predict for perfect
overlap:

    predicted = (t_R + t_T + t_W) / (max(t_R, t_T) + t_W)      t_R rollout + reward, t_T learn, t_W sync

Placement. k0 is the tiny default: two DDP learners on the two cores while the rollout actor
waits, then the rollout actor alone. With k ≥ 1 the phases run at once, and two learners plus a
rollout actor would be three busy processes on two cores (k1_shared measures that); k1 and k2
run ONE learner (rl.num_learners=1), so learner and rollout actor each keep a core. The batch is
the same in every variant (rl.prompts_per_step pinned to k0's), and one learner over the whole
batch computes the same token-level loss as two DDP ranks over halves of it.

A benchmark, not a test: the numbers depend on the machine and on what else runs on it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medmo_rl.ablate import _link_base  # noqa: E402  (the same linked run directories as the ablations)
from medmo_rl.config import load_config  # noqa: E402
from medmo_rl.driver.rl_loop import prompts_per_step  # noqa: E402


@dataclass(frozen=True)
class Variant:
    key: str
    overrides: tuple[str, ...]
    what: str


VARIANTS = {v.key: v for v in (
    Variant("k0", ("rl.max_staleness=0",), "on-policy, 2 learners (the tiny default)"),
    Variant("k1", ("rl.max_staleness=1", "rl.num_learners=1"), "staleness ≤ 1, 1 learner + 1 rollout actor"),
    Variant("k2", ("rl.max_staleness=2", "rl.num_learners=1"), "staleness ≤ 2, 1 learner + 1 rollout actor"),
    Variant("k1_shared", ("rl.max_staleness=1",), "staleness ≤ 1, 2 learners + 1 rollout actor on 2 cores"),
)}


def phase_medians(rows: list[dict]) -> dict[str, float]:
    med = lambda k: statistics.median(r[k] for r in rows)
    return {"rollout_s": med("time/rollout_s") + med("time/reward_s"), "learn_s": med("time/learn_s"),
            "sync_s": med("time/sync_s"), "wait_s": med("time/rollout_wait_s"), "overlap_s": med("time/overlap_s"),
            "step_s": med("time/step_s")}


def predicted_ratio(p: dict[str, float]) -> float:
    """(t_R + t_T + t_W) / (max(t_R, t_T) + t_W) from one run's phase times."""
    return (p["rollout_s"] + p["learn_s"] + p["sync_s"]) / (max(p["rollout_s"], p["learn_s"]) + p["sync_s"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="runs/tiny", help="a run directory with a finished SFT (sft/stage3/final/DONE)")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=1, help="first steps left out of steps/s")
    ap.add_argument("--variants", default="k0,k1,k2,k1_shared", help=f"comma-separated subset of {', '.join(VARIANTS)}")
    ap.add_argument("--out", default="", help="write the results as JSON here")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides for every variant")
    args = ap.parse_args()
    base = Path(args.base).resolve()
    if not (base / "sft" / "stage3" / "final" / "DONE").exists():
        raise SystemExit(f"{base}: no finished SFT (sft/stage3/final/DONE); run `make run` first or pass --base")
    if args.steps <= args.warmup:
        raise SystemExit("--steps must exceed --warmup")
    unknown = [k for k in args.variants.split(",") if k not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; allowed: {', '.join(VARIANTS)}")
    cfg = load_config(None, args.overrides)
    common = [f"rl.max_steps={args.steps}", f"rl.checkpoint_every={args.steps}",
              f"rl.prompts_per_step={prompts_per_step(cfg)}", *args.overrides]
    results = {}
    for key in args.variants.split(","):
        v = VARIANTS[key]
        name = f"{base.name}-bench-{key}"
        run_dir = base.parent / name
        if (run_dir / "rl").exists():
            subprocess.run(["rm", "-rf", str(run_dir / "rl")], check=True)  # a fresh RL stage, not a resume
        _link_base(base, run_dir)
        cmd = [sys.executable, "-m", "medmo_rl.run", "--stages", "stage4", f"output_dir={base.parent}", f"name={name}",
               *common, *v.overrides]
        log = base.parent / f"{name}.log"
        print(f"{key}: {v.what} … (log: {log})", flush=True)
        t0 = time.perf_counter()
        with open(log, "w") as f:
            r = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                               env={**os.environ, "RAY_AUTH_MODE": "disabled"})
        if r.returncode:
            raise SystemExit(f"{key} failed (exit {r.returncode}); last lines of {log}:\n{log.read_text()[-3000:]}")
        rows = [json.loads(x) for x in (run_dir / "rl" / "metrics.jsonl").read_text().splitlines()]
        steady = rows[args.warmup:]
        results[key] = {"what": v.what, "steps_per_s": len(steady) / sum(r["time/step_s"] for r in steady),
                        "stage_s": time.perf_counter() - t0, **phase_medians(steady),
                        "staleness_mean": statistics.mean(r["rollout/staleness_mean"] for r in steady),
                        "staleness_max": max(r["rollout/staleness_max"] for r in steady),
                        "is_weight_mean": statistics.mean(r["learn/is_weight_mean"] for r in steady),
                        "is_truncated_frac": statistics.mean(r["learn/is_truncated_frac"] for r in steady)}
    ref = results.get("k0")
    print(f"\nRL steps/s on {base}/sft/stage3/final, steps {args.warmup + 1}…{args.steps} "
          f"({prompts_per_step(cfg)} prompts × G={cfg.rl.num_generations} per step)\n")
    print("| variant | steps/s | × k0 | rollout s | learn s | sync s | learner waits s | overlap s | staleness mean/max "
          "| IS weight | truncated |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for key, r in results.items():
        ratio = f"{r['steps_per_s'] / ref['steps_per_s']:.2f}" if ref else "—"
        print(f"| {key}: {r['what']} | {r['steps_per_s']:.3f} | {ratio} | {r['rollout_s']:.2f} | {r['learn_s']:.2f} | "
              f"{r['sync_s']:.2f} | {r['wait_s']:.2f} | {r['overlap_s']:.2f} | {r['staleness_mean']:.2f}/"
              f"{r['staleness_max']} | {r['is_weight_mean']:.4f} | {r['is_truncated_frac']:.4f} |")
    if ref:
        print(f"\npredicted by k0's phase times for perfect overlap: {predicted_ratio(ref):.2f}×")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
        print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
