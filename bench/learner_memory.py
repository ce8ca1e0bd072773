"""Benchmark: does a learner rank's private memory grow over RL steps? With and without giving
the glibc heap's free pages back after each step (Learner.train_step → resources.release_free_heap).

    python bench/learner_memory.py [--model DIR] [--data grounding.jsonl] [--steps 300]

Two DDP learner ranks as Ray actors (the RL stage's LearnerGroup), fed rollout-like steps:
16 prompts × G = 8 completions of 1–160 random tokens (their lengths are what varies the tensor
sizes), weights exported with the probe every step (rank 0), a checkpoint every 10 steps. Run
twice in one invocation — first the baseline with the trim switched off inside the actors, then
as shipped — each printing every rank's private memory (RssAnon) every 20 steps, the
least-squares growth per 100 steps after a 40-step warm-up, and the seconds per step.
Defaults: the SFT checkpoint and data of a finished `make run` (runs/tiny) or of bench/soak.py
(runs/tiny-soak). A benchmark, not a test: the figures depend on the machine.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import ray

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medmo_rl import prompts  # noqa: E402
from medmo_rl.config import load_config  # noqa: E402
from medmo_rl.driver.learner_group import LearnerGroup  # noqa: E402
from medmo_rl.probe import make_probe  # noqa: E402
from medmo_rl.records import TrainItem  # noqa: E402
from medmo_rl.resources import _status_bytes, growth_per_step  # noqa: E402
from medmo_rl.schema import load_samples  # noqa: E402

MIB = 2**20
WARMUP = 40


def _default(*candidates: str) -> str | None:
    return next((str(ROOT / c) for c in candidates if (ROOT / c).exists()), None)


def _no_trim(actor_self) -> int:
    import medmo_rl.learner

    medmo_rl.learner.release_free_heap = lambda: False  # the baseline: the step as it was before
    return os.getpid()


def _pid(actor_self) -> int:
    return os.getpid()


def run(model: str, samples: list, steps: int, *, trim: bool, seed: int = 0) -> None:
    from transformers import AutoConfig, AutoProcessor

    cfg = load_config(str(ROOT / "configs" / "tiny.yaml"))
    px = 64 * 64
    group = LearnerGroup(model, cfg.rl, total_steps=steps, max_pixels=px, seed=seed, dtype="float32")
    pids = ray.get([a.__ray_call__.remote(_pid if trim else _no_trim) for a in group.actors])
    processor = AutoProcessor.from_pretrained(model)
    probe = make_probe(processor)
    vocab = AutoConfig.from_pretrained(model).get_text_config().vocab_size  # the model's rows, not the tokenizer's
    rng = random.Random(seed)
    prompt_ids = {}
    rows: list[tuple[int, list[float]]] = []
    print(f"== {'as shipped (malloc_trim after every step)' if trim else 'baseline (no trim)'}: "
          f"{steps} steps, ranks' private memory in MiB ==", flush=True)
    with tempfile.TemporaryDirectory(prefix="learner-memory-") as ckpt:
        t0 = time.perf_counter()
        for step in range(steps):
            items = []
            for s in rng.sample(samples, 16):
                if s.id not in prompt_ids:
                    enc = processor(text=[prompts.render_prompt(processor, s)],
                                    images=[prompts.load_image(s.images[0], px)])
                    prompt_ids[s.id] = tuple(int(t) for t in enc["input_ids"][0])
                for _ in range(cfg.rl.num_generations):
                    comp = tuple(rng.randrange(vocab) for _ in range(rng.randint(1, 160)))
                    items.append(TrainItem(sample=s, prompt_token_ids=prompt_ids[s.id], completion_token_ids=comp,
                                           engine_logprobs=tuple(-0.5 for _ in comp), advantage=rng.choice([-1.0, 1.0])))
            group.train_step(items)
            group.export_weights(probe)
            if step % 10 == 0:
                group.save(str(Path(ckpt) / f"step_{step % 30}"))
            if step % 20 == 0 or step == steps - 1:
                rows.append((step, [_status_bytes(p, "RssAnon")[0] / MIB for p in pids]))
                print(f"step {step:4d}: " + "  ".join(f"rank {r} {v:6.1f}" for r, v in enumerate(rows[-1][1])),
                      flush=True)
        wall = time.perf_counter() - t0
    group.shutdown()
    later = [(s, v) for s, v in rows if s >= WARMUP]
    slopes = [100 * growth_per_step([s for s, _ in later], [v[r] for _, v in later]) for r in range(len(pids))]
    print(f"growth after step {WARMUP}: " + ", ".join(f"rank {r} {g:+.2f} MiB / 100 steps" for r, g in enumerate(slopes))
          + f"; {wall / steps:.2f} s per step", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=_default("runs/tiny/sft/stage3/final", "runs/tiny-soak/sft/stage3/final"))
    ap.add_argument("--data", default=None, help="grounding records (default: the run's synthetic grounding.jsonl)")
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    if args.model is None:
        raise SystemExit("no SFT checkpoint: pass --model DIR (or finish `make run` / bench/soak.py first)")
    data = args.data or next(iter(sorted((Path(args.model).parents[2] / "data").glob("synthetic-train-*/grounding.jsonl"))),
                             None)
    if data is None:
        raise SystemExit(f"no grounding.jsonl under {Path(args.model).parents[2] / 'data'}: pass --data")
    samples = list(load_samples(str(data)).samples)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        for trim in (False, True):
            run(args.model, samples, args.steps, trim=trim)
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
