"""Run SFT stages 1–3 on their own:

    RAY_AUTH_MODE=disabled python -m sft --config configs/tiny.yaml [section.key=value ...] [--eval 200]

Run folder: <output_dir>/<name>/ (resolved config.yaml, sft/stageK/...; see sft/stages.py).
Base model: model.path, or the offline tiny Qwen3-VL built into <output_dir>/cache/models.
Synthetic data is generated into <output_dir>/cache/data. Re-running the same command resumes.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from medmo_rl.config import ClusterConfig, dump_yaml, load_config


def init_ray(cluster: ClusterConfig) -> None:
    """Join the cluster this job runs in; else (if allowed) start a local one with num_cpus logical CPUs."""
    import ray

    if ray.is_initialized():
        return
    if cluster.address != "auto":
        ray.init(address=cluster.address)
        return
    try:
        ray.init(address="auto")
    except ConnectionError:
        if not cluster.allow_local:
            raise
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # loopback-only cluster (ENVIRONMENT.md 7)
        ray.init(address="local", num_cpus=cluster.num_cpus, include_dashboard=False)


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(prog="python -m sft", description="MedMO SFT stages 1–3 as Ray Train jobs")
    ap.add_argument("--config", default=None, help="recipe YAML (default: configs/tiny.yaml)")
    ap.add_argument("--eval", type=int, default=0, metavar="N",
                    help="afterwards, grounding IoU of the final model on N held-out synthetic records")
    ap.add_argument("overrides", nargs="*", help="dotted overrides, e.g. sft.stage2.max_steps=100")
    args = ap.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    cfg = load_config(args.config, args.overrides)
    out = Path(cfg.output_dir).resolve()
    run_dir = out / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_yaml(cfg))

    from medmo_rl.tiny_model import resolve_model
    from sft.stages import run_sft_stages

    base = resolve_model(cfg.model.path, out / "cache" / "models", seed=cfg.model.tiny_seed)
    init_ray(cfg.cluster)
    final = run_sft_stages(cfg, base, run_dir, out / "cache" / "data")
    print(f"SFT final model: {final}")
    if args.eval:
        from medmo_rl.datasets import resolve
        from sft.evaluate import evaluate_grounding

        enabled = [getattr(cfg.sft, s) for s in ("stage1", "stage2", "stage3") if getattr(cfg.sft, s).enabled]
        last = enabled[-1] if enabled else None
        ev = evaluate_grounding(final, resolve("synthetic_eval_grounding", cfg.data, out / "cache" / "data"),
                                limit=args.eval, answer_format=last.answer_format if last else "plain",
                                max_pixels=last.max_pixels if last else 1280 * 1280)
        (run_dir / "sft" / "eval_grounding.json").write_text(json.dumps(ev.__dict__, indent=1))
        print(f"grounding: mean IoU {ev.mean_iou:.3f}, parse rate {ev.parse_rate:.3f} on {ev.n} records")
    return final


if __name__ == "__main__":
    main()
