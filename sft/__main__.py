"""Run SFT stages 1–3 on their own:

    RAY_AUTH_MODE=disabled python -m sft --config configs/tiny.yaml [section.key=value ...] [--eval 200]

Run folder: <output_dir>/<name>/ (resolved config.yaml, sft/stageK/...; see sft/stages.py).
Same layout as `python -m medmo_rl.run`: base model (model.path, or the offline tiny Qwen3-VL) in
<run>/base, synthetic data in <run>/data. Re-running the same command resumes.
Ray: joins RAY_ADDRESS (as under `ray job submit`), else starts a local cluster (cluster.num_cpus);
worker output (the rank-0 progress bar, tracebacks) reaches this console; metrics are in sft/stageK/metrics.jsonl.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from medmo_rl.config import ClusterConfig, dump_yaml, load_config


def _connect_ray(cluster: ClusterConfig) -> str:
    """RAY_ADDRESS (as under `ray job submit`) or cluster.address → join it; else a local cluster."""
    import os

    import ray

    if ray.is_initialized():
        return "already initialised"
    address = os.environ.get("RAY_ADDRESS") or (cluster.address if cluster.address not in ("auto", "local") else "")
    if address:
        ray.init(address=address)
        return f"joined {address}"
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # loopback-only: Ray 2.60 would ask for a token
    ray.init(address="local", num_cpus=cluster.num_cpus, include_dashboard=False)
    return f"started a local cluster with {cluster.num_cpus} logical CPUs"


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(prog="python -m sft", description="MedMO SFT stages 1–3 as Ray Train jobs")
    ap.add_argument("--config", default=None, help="recipe YAML (default: configs/tiny.yaml)")
    ap.add_argument("--eval", type=int, default=0, metavar="N",
                    help="afterwards, grounding IoU of the final model on N held-out synthetic records")
    ap.add_argument("overrides", nargs="*", help="dotted overrides, e.g. sft.stage2.max_steps=100")
    args = ap.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    cfg = load_config(args.config, args.overrides)
    run_dir = Path(cfg.output_dir).resolve() / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_yaml(cfg))

    from medmo_rl.tiny_model import resolve_model
    from sft.stages import run_sft_stages

    base = resolve_model(cfg.model.path, run_dir / "base", seed=cfg.model.tiny_seed)
    print("Ray:", _connect_ray(cfg.cluster))
    final = run_sft_stages(cfg, base, run_dir, run_dir / "data")
    print(f"SFT final model: {final}")
    if args.eval:
        from medmo_rl.datasets import resolve
        from sft.evaluate import evaluate_grounding

        enabled = [getattr(cfg.sft, s) for s in ("stage1", "stage2", "stage3") if getattr(cfg.sft, s).enabled]
        last = enabled[-1] if enabled else None
        ev = evaluate_grounding(final, resolve("synthetic_eval_grounding", cfg.data, run_dir / "data"),
                                limit=args.eval, answer_format=last.answer_format if last else "plain",
                                max_pixels=last.max_pixels if last else 1280 * 1280)
        (run_dir / "sft").mkdir(exist_ok=True)
        (run_dir / "sft" / "eval_grounding.json").write_text(json.dumps(ev.__dict__, indent=1))
        print(f"grounding: mean IoU {ev.mean_iou:.3f}, parse rate {ev.parse_rate:.3f} on {ev.n} records")
    return final


if __name__ == "__main__":
    main()
