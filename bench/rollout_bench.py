"""Benchmark of the rollout path on the same prompts (G completions each, with images).

    python bench/rollout_bench.py [--model DIR] [--prompts 8] [--n 8] [--max-tokens 1024] [--rounds 2] [--threads 1]

Prints, in one run (the three generators interleaved round by round, best round each, the same
thread count each, since the machine is shared and its load drifts):
1. RolloutPool (one Ray actor, in-process vLLM) vs raw `vllm.LLM.generate` in this process with
   the same engine settings, prompts and sampling: generated tokens/s (goal: pool ≥ 0.9× raw);
2. vLLM (raw) vs transformers `generate` (same model and prompts, G via num_return_sequences,
   one left-padded batch): tokens/s (goal ≥ 3×);
3. a weight push into the pool (object store, buckets, reload, cache resets) with the probe:
   the learner's probe time, the push's wall time and the actor's load / probe parts.
Defaults follow the RL stage: G = 8, completions up to 1024 tokens.
A benchmark, not a test: numbers depend on the machine (and on what else runs on it).
--model defaults to the offline tiny Qwen3-VL, built into a temporary folder.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="", help="HF checkpoint folder; default: the tiny model")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=1024, help="the RL stage's max completion length")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="compute threads of each of the three (same for all)")
    ap.add_argument("--max-pixels", type=int, default=64 * 64)
    return ap.parse_args()


def _tokens(groups) -> int:
    return sum(len(c.token_ids) for g in groups for c in g.completions)


def hf_runner(model_dir: Path, samples, args):
    """transformers generate over one left-padded batch of all prompts × n samples → run() -> (s, tokens)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from medmo_rl import prompts

    processor = AutoProcessor.from_pretrained(model_dir)
    processor.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    texts = [prompts.render_prompt(processor, s) for s in samples]
    images = [prompts.load_image(s.images[0], args.max_pixels) for s in samples]
    inputs = processor(text=texts, images=images, return_tensors="pt", padding=True)
    eos = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    kwargs = dict(do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=args.max_tokens,
                  num_return_sequences=args.n, pad_token_id=processor.tokenizer.pad_token_id, eos_token_id=eos)

    def run() -> tuple[float, int]:
        with torch.no_grad():
            t0 = time.perf_counter()
            out = model.generate(**inputs, **kwargs)
            dt = time.perf_counter() - t0
        # a sequence's tokens run up to and including its first EOS; the rest is padding
        rows = out[:, inputs["input_ids"].shape[1]:].tolist()
        return dt, sum(row.index(eos) + 1 if eos in row else len(row) for row in rows)

    return run


def main() -> None:
    args = parse_args()
    # Before torch/vllm/ray load. OMP_NUM_THREADS: the same thread count for transformers, the raw
    # engine and the pool's actor (without it an in-process vLLM drops itself to 1 thread).
    # RAY_worker_niceness=0: Ray starts workers at nice 15, which on a shared machine would hand
    # the raw engine (this process, nice 0) the CPU and the pool's actor the leftovers.
    os.environ.update(OMP_NUM_THREADS=str(args.threads), RAY_worker_niceness="0", VLLM_ENABLE_V1_MULTIPROCESSING="0",
                      RAY_AUTH_MODE="disabled", TOKENIZERS_PARALLELISM="false")

    import ray
    import torch

    from medmo_rl.config import RolloutConfig
    from medmo_rl.records import SamplingSpec
    from medmo_rl.schema import load_samples
    from medmo_rl.synthetic import generate as make_synthetic
    from medmo_rl.tiny_model import resolve_model

    tmp = Path(tempfile.mkdtemp(prefix="rollout-bench-", dir="/tmp"))
    try:
        model_dir = resolve_model(args.model, tmp / "models")
        data = make_synthetic(tmp / "data", max(8, args.prompts // 3 + 1), seed=0, size=64)
        samples = [s for s in load_samples(data["all"]).samples if s.images][: args.prompts]
        # max_num_seqs holds the whole batch (prompts × n), as transformers' one batch does
        cfg = RolloutConfig(num_workers=1, cpus_per_worker=float(args.threads), max_model_len=args.max_tokens + 512,
                            max_num_seqs=len(samples) * args.n, max_pixels=args.max_pixels, kv_cache_gib=1.0)
        spec = SamplingSpec(n=args.n, max_tokens=args.max_tokens, temperature=1.0, seed=0)
        print(f"model {model_dir.name}; {len(samples)} prompts with one image, n={args.n}, "
              f"max_tokens={args.max_tokens}; "
              f"{args.threads} thread(s) each; best of {args.rounds} interleaved rounds; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

        run_hf = hf_runner(model_dir, samples, args)

        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
                 _temp_dir=str(tmp / "ray"), configure_logging=False)
        from transformers import AutoModelForImageTextToText, AutoProcessor
        from vllm import LLM, SamplingParams

        from medmo_rl import prompts
        from rollout.pool import RolloutPool
        from medmo_rl.probe import hf_probe_logprobs, make_probe
        from rollout.worker import request_seed

        # the raw baseline: the same engine settings and inputs as a rollout worker's, no pool around it
        raw = LLM(model=str(model_dir), dtype=cfg.dtype, max_model_len=cfg.max_model_len, max_num_seqs=cfg.max_num_seqs,
                  limit_mm_per_prompt={"image": 1}, enforce_eager=True, seed=0,
                  kv_cache_memory_bytes=int(cfg.kv_cache_gib * 2**30), enable_chunked_prefill=False,
                  max_num_batched_tokens=max(4096, cfg.max_model_len))
        processor = AutoProcessor.from_pretrained(model_dir)

        def run_raw() -> tuple[float, int]:
            t0 = time.perf_counter()  # from samples, like the pool: prompt rendering and image loading count
            raw_inputs = [{"prompt": prompts.render_prompt(processor, s),
                           "multi_modal_data": {"image": prompts.load_image(s.images[0], cfg.max_pixels)}}
                          for s in samples]
            raw_params = [SamplingParams(n=spec.n, max_tokens=spec.max_tokens, temperature=spec.temperature, logprobs=0,
                                         seed=request_seed(spec.seed, s.id)) for s in samples]
            outs = raw.generate(raw_inputs, raw_params, use_tqdm=False)
            dt = time.perf_counter() - t0
            return dt, sum(len(c.token_ids) for o in outs for c in o.outputs)

        t0 = time.perf_counter()
        pool = RolloutPool(str(model_dir), cfg)
        start_s = time.perf_counter() - t0

        def run_pool() -> tuple[float, int]:
            t0 = time.perf_counter()
            groups = pool.generate(samples, spec)
            dt = time.perf_counter() - t0
            assert all(g.error is None and len(g.completions) == args.n for g in groups)
            return dt, _tokens(groups)

        run_raw(), run_pool()  # warm-up (first-request compilation)
        hf_runs, raw_runs, pool_runs = [], [], []
        for _ in range(args.rounds):  # interleaved: the machine is shared, its load drifts
            hf_runs.append(run_hf())
            raw_runs.append(run_raw())
            pool_runs.append(run_pool())
        hf_tps, raw_tps, pool_tps = (max(n / dt for dt, n in runs) for runs in (hf_runs, raw_runs, pool_runs))
        print(f"\n1. pool vs raw vLLM ({pool_runs[0][1]} tokens per run)")
        print(f"   raw vllm.LLM.generate : {raw_tps:9.0f} tok/s   runs {[f'{dt:.2f}s' for dt, _ in raw_runs]}")
        print(f"   RolloutPool.generate  : {pool_tps:9.0f} tok/s   runs {[f'{dt:.2f}s' for dt, _ in pool_runs]}"
              f"   (actor start-up {start_s:.1f}s)")
        print(f"   pool / raw            : {pool_tps / raw_tps:9.2f}x   (goal >= 0.9)")
        print("\n2. vLLM vs transformers generate")
        print(f"   transformers generate : {hf_tps:9.0f} tok/s   runs {[f'{dt:.2f}s' for dt, _ in hf_runs]}")
        print(f"   vLLM (raw)            : {raw_tps:9.0f} tok/s")
        print(f"   vLLM / transformers   : {raw_tps / hf_tps:9.2f}x   (goal >= 3)")
        raw.llm_engine.engine_core.shutdown()  # before the push: back to one engine

        learner = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
        with torch.no_grad():
            for p in learner.parameters():
                p.mul_(1.01)
        n_params = sum(p.numel() for p in learner.parameters())
        print(f"\n3. weight push ({n_params / 1e6:.2f}M params, fp32, "
              f"{sum(t.numel() * t.element_size() for t in learner.state_dict().values()) / 2**20:.1f} MiB)")
        for version in (1, 2):
            t0 = time.perf_counter()
            expected = hf_probe_logprobs(learner, processor, make_probe(processor))
            t1 = time.perf_counter()
            (update,) = pool.push_weights(version, learner.state_dict(), expected)
            t2 = time.perf_counter()
            print(f"   v{version}: learner probe {1e3 * (t1 - t0):6.0f} ms | push_weights {1e3 * (t2 - t1):6.0f} ms "
                  f"(actor: load {1e3 * update.load_s:.0f} ms, probe {1e3 * update.probe_s:.0f} ms) | "
                  f"probe max |diff| {update.probe_max_abs_diff:.2e} (tolerance {cfg.probe_tolerance:g})")
        pool.shutdown()
        ray.shutdown()
        print(f"(load average at the end {os.getloadavg()[0]:.1f})")
    finally:
        if ray.is_initialized():  # after an error: stop Ray before deleting its temp dir
            ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
