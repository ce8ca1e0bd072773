"""Soak: a long RL stage on the tiny model, the rollout pool resized every --resize-every steps, the
node's resources sampled every --sample-every steps — does anything grow that would end a 3-day run?

    python bench/soak.py [--base runs/tiny] [--steps 300] [--resize-every 50] [--sample-every 10] [overrides…]

Runs `python -m medmo_rl.run --stages stage4` in runs/<name>-soak, starting from the SFT checkpoint
of a finished `make run` (--base; its base/, data/ and sft/ are linked, not copied) — or, without
one, from a short SFT (QUICK_SFT) trained in the soak's own run directory first. While it runs,
every --resize-every steps this script asks the job for the other pool size (1 ↔ 2 rollout
workers, `python -m medmo_rl.control`). The RL stage's own monitor (rl.monitor_every,
driver/monitor.py) writes rl/resources.jsonl and rl/resources.png; at the end this prints the
growth per 100 steps of each role's fastest-growing process (RSS, private pages, fds), /dev/shm and the object
store, and the first and last RSS of every process that lived through the whole run.

A benchmark, not a test: the numbers depend on the machine and on what else runs on it.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medmo_rl.ablate import _link_base  # noqa: E402  (the same linked run directories as the ablations)
from medmo_rl.driver.monitor import MIB, ResourceMonitor, in_bytes  # noqa: E402

QUICK_SFT = ("sft.stage1.max_steps=30", "sft.stage2.max_steps=400", "sft.stage3.max_steps=60")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="runs/tiny", help="a finished `make run` (its sft/stage3/final is the start)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--resize-every", type=int, default=50)
    ap.add_argument("--sample-every", type=int, default=10)
    ap.add_argument("overrides", nargs="*", help="extra dotted-key overrides for the RL stage")
    args = ap.parse_args()
    base = (ROOT / args.base).resolve() if not Path(args.base).is_absolute() else Path(args.base)
    name = f"{base.name}-soak"
    run = base.parent / name
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    if (base / "sft" / "stage3" / "final" / "DONE").exists():
        _link_base(base, run)
    elif not (run / "sft" / "stage3" / "final" / "DONE").exists():
        # a leak hunt needs a policy that answers like the trained one (short, parseable), not the best one
        print(f"no finished SFT in {base}: a short one ({' '.join(QUICK_SFT)}) in {run} first", flush=True)
        subprocess.run([sys.executable, "-m", "medmo_rl.run", "--stages", "stage1,stage2,stage3",
                        f"output_dir={base.parent}", f"name={name}", *QUICK_SFT], cwd=ROOT, env=env, check=True)
    shutil.rmtree(run / "rl", ignore_errors=True)  # a soak measures a fresh RL stage, never a resumed one
    cmd = [sys.executable, "-m", "medmo_rl.run", "--stages", "stage4", f"output_dir={base.parent}", f"name={name}",
           f"rl.max_steps={args.steps}", f"rl.monitor_every={args.sample_every}", "rl.checkpoint_every=50",
           "rl.dynamic_sampling=false", "rl.prompts_per_step=4", "eval.enabled=false", *args.overrides]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: [lines.append(x) or None for x in proc.stdout], daemon=True)
    reader.start()
    metrics = run / "rl" / "metrics.jsonl"
    resized, size = 0, 1  # resizes asked for so far; the pool's size after the last one
    while proc.poll() is None:
        time.sleep(0.5)
        steps = len(metrics.read_text().splitlines()) if metrics.exists() else 0
        if steps // args.resize_every > resized and steps < args.steps:  # a step may pass between two looks
            gcs = next((x.split(" at ")[-1].strip() for x in lines if x.startswith("Ray: started a local cluster")), "auto")
            size = 3 - size
            r = subprocess.run([sys.executable, "-m", "medmo_rl.control", "--address", gcs, "--name", name,
                                "--rollout-workers", str(size)], cwd=ROOT, env=env, capture_output=True, text=True)
            print(f"step {steps}: asked for {size} rollout workers: {r.stdout.strip() or r.stderr.strip()[-300:]}",
                  flush=True)
            resized += 1
    reader.join(timeout=10)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        print("".join(lines[-60:]))
        raise SystemExit(f"the soak run failed (exit {proc.returncode}) after {wall:.0f} s")
    monitor = ResourceMonitor(run / "rl" / "resources.jsonl", args.sample_every)
    steps = [r["step"] for r in monitor.rows()]
    print(f"\nsoak: {args.steps} RL steps in {wall:.0f} s, {len(steps)} samples, pool resized every "
          f"{args.resize_every} steps; {run / 'rl' / 'resources.png'}")
    per_process = monitor.per_process()
    print(f"{'series (per process: the fastest-growing one)':<48} {'growth / 100 steps':>20}")
    for key, slope in monitor.growth().items():
        mib = in_bytes(key)
        print(f"{key:<48} {slope / (MIB if mib else 1):>+16.2f}{' MiB' if mib else ''}")
    print(f"\n{'process (sampled the whole run)':<36} {'RSS first':>10} {'last':>8} {'private first':>14} {'last':>8}  MiB")
    for key, pts in per_process.items():
        if key.startswith("rss/") and len(pts) == len(steps):
            anon = per_process["anon/" + key.removeprefix("rss/")]
            print(f"{key.removeprefix('rss/'):<36} {pts[0][1] / MIB:>10.1f} {pts[-1][1] / MIB:>8.1f} "
                  f"{anon[0][1] / MIB:>14.1f} {anon[-1][1] / MIB:>8.1f}")
    print(f"steps sampled: {steps[0]}…{steps[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
