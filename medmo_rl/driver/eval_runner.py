"""The eval: greedy generation with the project's rollout worker (vLLM), then the scoring of
medmo_rl/benchmarks.py; writes results.md / results.json, predictions and overlays.

    python -m medmo_rl.eval --model DIR --benchmarks vqa_rad,bccd,nuclei,pubmedqa,medqa --limit 50
    python -m medmo_rl.eval --model runs/tiny/rl/final --benchmarks synthetic_eval_grounding

The benchmark names are listed in medmo_rl/benchmarks.py.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from medmo_rl.benchmarks import (DEFAULT_DATA_ROOT, BenchResult, load_benchmark, markdown_table, score_benchmark,
                                 write_overlays)
from medmo_rl.config import RolloutConfig
from medmo_rl.metrics_log import strict_json
from medmo_rl.records import SamplingSpec
from rollout.worker import RolloutWorker


def evaluate(model_dir: str | Path, benchmarks: list[str], out_dir: Path, *, limit: int = 0,
             answer_format: str = "plain", data_root: Path = DEFAULT_DATA_ROOT, rollout_cfg=None,
             data_cfg=None, cache_dir: Path | None = None, max_tokens: int = 128) -> list[BenchResult]:
    """Greedy generation with one in-process RolloutWorker, then `score_benchmark` per benchmark."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # in-process engine: ~5 s to start instead of ~20 s in multi-process mode, and no extra processes
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # start-up INFO per model buries the results
    worker = RolloutWorker(str(model_dir), rollout_cfg or RolloutConfig(max_model_len=4096), seed=0)
    results = []
    try:
        for name in benchmarks:
            t0 = time.perf_counter()
            samples, rejected = load_benchmark(name, data_root=data_root, data_cfg=data_cfg, cache_dir=cache_dir)
            if limit:
                samples = samples[:limit]
            groups = worker.generate(samples, SamplingSpec(n=1, max_tokens=max_tokens, temperature=0.0), answer_format)
            comps = [g.completions[0].text if g.error is None and g.completions else None for g in groups]
            r = BenchResult(name, len(samples), score_benchmark(samples, comps), errors=sum(c is None for c in comps),
                            rejected_records=rejected, seconds=time.perf_counter() - t0)
            write_overlays(samples, comps, out_dir / "overlays" / name)
            with open(out_dir / f"{name}.predictions.jsonl", "w") as f:
                for s, c in zip(samples, comps):
                    f.write(json.dumps({"id": s.id, "completion": c, "answer": s.answer}) + "\n")
            results.append(r)
    finally:
        worker.shutdown()
    (out_dir / "results.json").write_text(strict_json([r.__dict__ for r in results], indent=2))
    (out_dir / "results.md").write_text(markdown_table(results) + "\n")
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m medmo_rl.eval", description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("--model", required=True, help="HF checkpoint folder (tiny or real)")
    ap.add_argument("--benchmarks", default="synthetic_eval_grounding", help="comma-separated (names: medmo_rl/benchmarks.py)")
    ap.add_argument("--limit", type=int, default=0, help="first N samples per benchmark (0: all)")
    ap.add_argument("--out", default="runs/eval")
    ap.add_argument("--answer-format", default="plain", choices=("plain", "think_answer"))
    ap.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--max-tokens", type=int, default=128)
    args = ap.parse_args(argv)
    results = evaluate(args.model, [b for b in args.benchmarks.split(",") if b], Path(args.out), limit=args.limit,
                       answer_format=args.answer_format, data_root=Path(args.data_root),
                       rollout_cfg=RolloutConfig(max_model_len=args.max_model_len), max_tokens=args.max_tokens)
    print(markdown_table(results))
    print(f"\nwritten: {Path(args.out) / 'results.md'}, results.json, overlays/")
    return 0
