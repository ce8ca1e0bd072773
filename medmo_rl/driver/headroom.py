"""What RL can gain on a grounding benchmark: greedy vs sampled completions vs the best of G samples.

    python -m medmo_rl.headroom --model runs/tiny/sft/stage3/final --temperatures 0.3,0.7
    python -m medmo_rl.headroom --model runs/tiny/sft/stage3/final --run runs/tiny --n 8 --limit 200

GRPO learns from the differences between the G completions it samples per prompt, while the eval
decodes greedily. Three numbers per temperature T say whether those samples can teach greedy
decoding anything (box metrics of `medmo_rl.grounding`, pooled over GT boxes):

    greedy      the eval's own decoding (T = 0)
    sample      the mean over the G sample slots (slot j of every prompt makes one sampled eval)
    best-of-G   per image the sample with the highest F1@0.5 (ties: larger Σ IoU), an oracle

`sample` far below `greedy` means most of what RL at that temperature sees are sampling errors
greedy decoding never makes — RL then sharpens the samples toward greedy instead of moving it;
`best-of-G` above `greedy` is the room the reward can pull greedy decoding toward.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Sequence

from medmo_rl.benchmarks import DEFAULT_DATA_ROOT, load_benchmark
from medmo_rl.config import RolloutConfig, load_config
from medmo_rl.grounding import best_of, score_images, summarize
from medmo_rl.schema import Sample

BENCHMARK = "synthetic_eval_grounding"
REPORTED = ("f1_50", "mean_iou", "precision50", "recall50", "boxes_per_image")


def metrics(samples: Sequence[Sample], completions: Sequence[str]) -> dict[str, float]:
    g = summarize(samples, score_images(samples, completions))
    return {k: getattr(g, k) for k in REPORTED}


def mean_rows(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}


def measure(model: str, temperatures: Sequence[float], *, n: int, limit: int, run_dir: Path,
            answer_format: str = "think_answer", max_tokens: int = 128) -> dict[str, dict[str, float]]:
    """{"greedy": metrics, "T=<t> sample": mean over slots, "T=<t> best-of-<n>": oracle} for `model`."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    from medmo_rl.records import SamplingSpec
    from rollout.worker import RolloutWorker  # here: the table helpers import without vLLM

    cfg = load_config(str(run_dir / "config.yaml") if (run_dir / "config.yaml").exists() else None, [])
    samples, _ = load_benchmark(BENCHMARK, data_root=DEFAULT_DATA_ROOT, data_cfg=cfg.data, cache_dir=run_dir / "data")
    samples = [s for s in samples if s.task == "grounding"][: limit or None]
    worker = RolloutWorker(model, RolloutConfig(max_model_len=1024, max_num_seqs=256), seed=0)
    out: dict[str, dict[str, float]] = {}
    try:
        greedy = worker.generate(samples, SamplingSpec(n=1, max_tokens=max_tokens, temperature=0.0), answer_format)
        out["greedy"] = metrics(samples, [g.completions[0].text if g.completions else "" for g in greedy])
        for t in temperatures:
            t0 = time.perf_counter()
            groups = worker.generate(samples, SamplingSpec(n=n, max_tokens=max_tokens, temperature=t), answer_format)
            comps = [[c.text for c in g.completions] + [""] * (n - len(g.completions)) for g in groups]
            out[f"T={t} sample"] = mean_rows([metrics(samples, [c[j] for c in comps]) for j in range(n)])
            out[f"T={t} best-of-{n}"] = metrics(samples, best_of(samples, comps))
            print(f"T={t}: {n * len(samples)} completions in {time.perf_counter() - t0:.1f} s", flush=True)
    finally:
        worker.shutdown()
    return out


def markdown(rows: dict[str, dict[str, float]]) -> str:
    lines = ["| decoding | " + " | ".join(REPORTED) + " |", "|---|" + "---|" * len(REPORTED)]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[k]:.2f}" if k == "boxes_per_image" else f"{r[k]:.3f}"
                                                for k in REPORTED) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m medmo_rl.headroom", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="HF checkpoint folder, e.g. runs/tiny/sft/stage3/final")
    ap.add_argument("--run", default="runs/tiny", help="run directory whose config.yaml and data/ define the eval split")
    ap.add_argument("--temperatures", default="0.3,0.7", help="comma-separated sampling temperatures")
    ap.add_argument("--n", type=int, default=8, help="samples per prompt (G)")
    ap.add_argument("--limit", type=int, default=200, help="first N grounding images (0: all)")
    ap.add_argument("--answer-format", default="think_answer", choices=("plain", "think_answer"),
                    help="the prompt layout the checkpoint was trained on (SFT stage 3 and RL: think_answer)")
    ap.add_argument("--json", default="", help="also write the rows here")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error("--n must be ≥ 1")
    temps = [float(t) for t in args.temperatures.split(",") if t]
    if any(t <= 0 for t in temps):
        ap.error("--temperatures: sampling needs T > 0 (the greedy row is always measured)")
    rows = measure(args.model, temps, n=args.n, limit=args.limit, run_dir=Path(args.run),
                   answer_format=args.answer_format)
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0
