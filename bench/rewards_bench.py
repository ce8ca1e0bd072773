"""Benchmark of the rewards: vectorised bbox reward, and the HTTP service under load.

    python bench/rewards_bench.py [--seconds 5] [--batch 256] [--clients 64] [--workers 1,2]

Prints, in one run:
1. bbox_reward_batch vs the per-sample reference (bbox_reward_reference) on grounding batches
   like the RL stage's (1–3 GT boxes, the model giving one box fewer to one more): asserts
   identical values, prints the speedup (goal ≥ 20×);
2. the per-phase split of one /v1/score request body, in-process: JSON decode + envelope
   (msgspec), record validation (cold, and from the reference cache), scoring, response encode;
3. for each --workers count: `python -m rewards.serve --workers N` in a subprocess, loaded by
   bench/http_load.py (keep-alive connections on one asyncio loop, ~0.05 core of client; the
   httpx threads used before were the bottleneck at 64 clients): one client posting batches of
   --batch completions back to back (completions/s, p50/p99; goal ≥ 25k completions/s at batch
   256 from one process), eight such clients (1 → 2 process scaling: uvicorn's workers share one
   listening socket and two connections often land on one worker), then --clients concurrent
   clients posting batches of 32 (goal p99 < 100 ms). Errors — HTTP ≠ 200, or an item with an
   error — are counted, the goal is 0; the CPU the service and the client used is printed;
   every client cycles through 8 bodies over the same references (the completions differ);
4. the one-process throughput again with the reference cache off (--reference-cache 0):
   every reference validated on every request, the cold-validation figure;
5. the baseline of the service's event-loop scoring, in the same run: one process scoring every
   body on its worker thread (--inline-bytes 0, how every body was scored before), and the
   ratios against it.
A benchmark, not a test: numbers depend on the machine (and on what else runs on it).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import httpx
import msgspec
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medmo_rl.boxes import to_relative  # noqa: E402
from http_load import load  # noqa: E402  (bench/http_load.py)
from rewards.bbox import bbox_reward_batch, bbox_reward_reference  # noqa: E402

VARIANTS = 8  # bodies each client cycles through: completions vary between requests, references repeat


def _boxes(rng: np.random.Generator, n: int, w: int, h: int) -> list[list[float]]:
    x1, y1 = rng.uniform(0, w * 0.8, n), rng.uniform(0, h * 0.8, n)
    bw, bh = rng.uniform(4, w * 0.2, n), rng.uniform(4, h * 0.2, n)
    return np.stack([x1, y1, np.minimum(x1 + bw, w), np.minimum(y1 + bh, h)], axis=1).round(1).tolist()


def grounding_batch(rng: np.random.Generator, n: int) -> tuple[list, list, list]:
    gts = [_boxes(rng, int(rng.integers(1, 4)), 512, 512) for _ in range(n)]
    preds = []
    for g in gts:
        k = max(0, len(g) + int(rng.integers(-1, 2)))
        jitter = rng.normal(0, 8, (min(k, len(g)), 4))
        near = (np.array(g[: len(jitter)]).reshape(-1, 4) + jitter).tolist()
        preds.append(near + _boxes(rng, k - len(near), 512, 512))
    return preds, gts, [(512, 512)] * n


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_bbox() -> None:
    print("== bbox reward: vectorised batch vs per-sample reference ==")
    for n in (256, 1024, 4096):
        rng = np.random.default_rng(n)
        preds, gts, sizes = grounding_batch(rng, n)
        vec = bbox_reward_batch(preds, gts, sizes)
        ref = np.array([bbox_reward_reference(p, g, image_size=s) for p, g, s in zip(preds, gts, sizes)])
        assert np.array_equal(vec, ref), f"values differ: max |Δ| = {np.abs(vec - ref).max()}"
        t_vec = best_time(lambda: bbox_reward_batch(preds, gts, sizes), 20)
        t_ref = best_time(lambda: [bbox_reward_reference(p, g, image_size=s) for p, g, s in zip(preds, gts, sizes)], 3)
        print(f"batch {n:5d}: vectorised {t_vec * 1e3:7.2f} ms ({t_vec / n * 1e6:5.2f} us/sample)  "
              f"reference {t_ref * 1e3:8.2f} ms ({t_ref / n * 1e6:6.1f} us/sample)  "
              f"speedup {t_ref / t_vec:5.1f}x  identical values: yes (mean R = {vec.mean():.4f})")


def score_items_json(rng: np.random.Generator, n: int, variant: int = 0) -> list[dict]:
    """RL-like items: 1/2 grounding, 1/4 closed VQA, 1/4 MCQ; ~1,000-character completions.

    variant > 0: the same references with other grounding completions (boxes moved by up to 6
    units), like the next RL step's completions for the same prompts.
    """
    jitter = np.random.default_rng(10_000 + variant)
    items = []
    think = "<think>\n" + "The image shows a chest radiograph; I compare both lung fields. " * 14 + "\n</think>\n"
    for i in range(n):
        kind = i % 4
        if kind in (0, 1):
            gts = _boxes(rng, int(rng.integers(1, 4)), 640, 480)
            ref = {"id": f"g{i}", "task": "grounding", "prompt": "Locate the nodules.", "answer": "",
                   "images": ["img.png"], "boxes": gts, "labels": ["nodule"] * len(gts),
                   "image_size": [640, 480], "source": "bench"}
            rel = [list(to_relative(b, (640, 480))) for b in gts]
            if variant:
                rel = [[min(1000, max(0, c + int(d))) for c, d in zip(b, jitter.integers(-6, 7, 4))] for b in rel]
            answer = "nodule <box>" + json.dumps(rel) + "</box>"
        elif kind == 2:
            ref = {"id": f"v{i}", "task": "vqa", "prompt": "Is there an effusion?", "answer": "yes",
                   "images": ["img.png"], "source": "bench"}
            answer = "Yes."
        else:
            ref = {"id": f"m{i}", "task": "vqa", "prompt": "Which finding?", "answer": "B", "images": ["img.png"],
                   "choices": ["Effusion", "Pneumonia", "Normal"], "source": "bench"}
            answer = "B"
        items.append({"completion": f"{think}<answer>\n{answer}\n</answer>", "num_tokens": int(rng.integers(200, 1100)),
                      "reference": ref})
    return items


def bodies(batch: int, seed: int, variants: int = VARIANTS) -> list[bytes]:
    """`variants` /v1/score bodies over the same references (one RL prompt set), other completions."""
    return [json.dumps({"items": score_items_json(np.random.default_rng(seed), batch, v)}).encode()
            for v in range(variants)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_phases(batch: int) -> None:
    from medmo_rl.config import RewardConfig
    from rewards import api
    from rewards.composite import ScoreItem, score_items
    from rewards.labels import ReferenceCache
    from rewards.service import _encoder, _reference_from_raw, _result_body, _score_decoder, score_batch

    print(f"== one /v1/score body of {batch} completions, in-process (best of 20) ==")
    config = RewardConfig()
    variants = bodies(batch, 0)
    body = variants[0]
    request = api.decode(_score_decoder, body)
    raws = [bytes(it.reference) for it in request.items]
    warm = ReferenceCache()
    refs = [warm.get(r, _reference_from_raw) for r in raws]
    items = [ScoreItem(it.completion, it.num_tokens, ref) for it, ref in zip(request.items, refs)]
    response = api.ScoreResponse([_result_body(r) for r in score_items(items, config)])
    phases = {
        "decode + envelope (msgspec)": lambda: api.decode(_score_decoder, body),
        "record validation, cold": lambda: [_reference_from_raw(r) for r in raws],
        "record validation, cached": lambda: [warm.get(r, _reference_from_raw) for r in raws],
        "scoring (score_items)": lambda: score_items(items, config),
        "encode (msgspec)": lambda: _encoder.encode(response),
        "whole body, cached refs": lambda: [_encoder.encode(score_batch(b, config, warm)) for b in variants],
        "whole body, cold refs": lambda: [_encoder.encode(score_batch(b, config, ReferenceCache(0))) for b in variants],
    }
    for name, fn in phases.items():
        t = best_time(fn, 20) / (len(variants) if name.startswith("whole") else 1)
        print(f"{name:30s} {t * 1e3:7.2f} ms  ({t / batch * 1e6:6.2f} us/completion)")


def start_service(port: int, workers: int = 1, extra: Sequence[str] = ()) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("MEDMO_REWARD_TOKEN", None)
    cmd = [sys.executable, "-m", "rewards.serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
           *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("reward service did not come up")


_results = msgspec.json.Decoder(dict)


def _item_errors(body: bytes) -> str | None:
    errors = [r["error"] for r in _results.decode(body)["results"] if r["error"] is not None]
    return f"{len(errors)} item error(s), first: {errors[0]}" if errors else None


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its children (uvicorn's workers)."""
    import psutil

    proc = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [proc, *proc.children(recursive=True)])


def bench_load(url: str, server_pid: int, batch: int, seconds: float, connections: int) -> tuple[float, float]:
    """`connections` keep-alive clients (bench/http_load.py) posting batches of `batch` back to back
    → (completions/s, p99 latency in ms)."""
    variants = bodies(batch, 0 if batch == 256 else 1)
    cpu0, client0 = _cpu_s(server_pid), time.process_time()
    latencies, errors, wall = load(url, "/v1/score", variants, connections, seconds, check=_item_errors)
    server_cores, client_cores = (_cpu_s(server_pid) - cpu0) / wall, (time.process_time() - client0) / wall
    lat = np.array(latencies) * 1e3
    print(f"{connections:3d} client(s), batch {batch:3d}: {len(lat) / wall:7,.0f} requests/s, "
          f"{len(lat) * batch / wall:7,.0f} completions/s, latency p50 {np.percentile(lat, 50):6.1f} ms, "
          f"p99 {np.percentile(lat, 99):6.1f} ms, errors {len(errors)}"
          + (f" (first: {errors[0]})" if errors else "")
          + f"; CPU: service {server_cores:.2f} cores, client {client_cores:.2f}")
    return len(lat) * batch / wall, float(np.percentile(lat, 99))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--workers", default="1,2", help="comma-separated service process counts to measure")
    args = p.parse_args()
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    bench_bbox()
    bench_phases(args.batch)
    # (label, workers, extra serve args); the last run is the baseline of the service's event-loop scoring
    runs = [(f"{w} service process(es)", int(w), []) for w in args.workers.split(",")]
    runs += [("1 service process, reference cache off", 1, ["--reference-cache", "0"]),
             ("1 service process, every body scored on the worker thread (--inline-bytes 0)", 1, ["--inline-bytes", "0"])]
    figures: dict[tuple[str, int], tuple[float, float]] = {}
    for label, workers, extra in runs:
        port = free_port()
        proc = start_service(port, workers, extra)
        print(f"#### {label}")
        try:
            url = f"http://127.0.0.1:{port}"
            figures[label, 1] = bench_load(url, proc.pid, args.batch, args.seconds, 1)
            if not extra:  # 1 → 2 process scaling: 8 connections, so the kernel gives each worker some
                bench_load(url, proc.pid, args.batch, args.seconds, 8)
            if "--reference-cache" not in extra:
                figures[label, args.clients] = bench_load(url, proc.pid, 32, args.seconds, args.clients)
            if not extra:
                metrics = httpx.get(f"{url}/metrics").text
                counts = [ln for ln in metrics.splitlines() if ln.startswith(
                    ("medmo_reward_items_total", "medmo_reward_item_errors_total", "medmo_reward_requests_total"))]
                print("service /metrics: " + "; ".join(counts))
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    first, base = runs[0][0], runs[-1][0]
    if first.startswith("1 "):
        for conns in (1, args.clients):
            (rate, p99), (rate0, p99_0) = figures[first, conns], figures[base, conns]
            print(f"event loop vs worker thread, {conns} client(s): throughput {rate / rate0:.2f}x, p99 {p99:.1f} vs "
                  f"{p99_0:.1f} ms")


if __name__ == "__main__":
    main()
