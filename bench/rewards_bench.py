"""Benchmark of the rewards: vectorised bbox reward, and the HTTP service under load.

    python bench/rewards_bench.py [--seconds 5] [--batch 256] [--clients 64] [--workers 1,2]

Prints, in one run:
1. bbox_reward_batch vs the per-sample reference (bbox_reward_reference) on grounding batches
   like the RL stage's (1–3 GT boxes, the model giving one box fewer to one more): asserts
   identical values, prints the speedup (goal ≥ 20×);
2. the per-phase split of one /v1/score request body, in-process: JSON decode + envelope
   (msgspec), record validation (cold, and from the reference cache), scoring, response encode;
3. for each --workers count: `python -m rewards.serve --workers N` in a subprocess, one client
   posting pre-serialised batches of --batch completions back to back (completions/s, p50/p99;
   goal ≥ 25k completions/s at batch 256 from one process), then --clients concurrent clients
   (threads, one connection each) posting batches of 32 (goal p99 < 100 ms; errors — HTTP ≠ 200,
   or an item with an error — counted, the goal is 0);
4. the one-process throughput again with the reference cache off (--reference-cache 0): the
   bench re-sends one body, so the cache always hits above; this is the cold-validation figure.
A benchmark, not a test: numbers depend on the machine (and on what else runs on it).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medmo_rl.boxes import to_relative  # noqa: E402
from rewards.bbox import bbox_reward_batch, bbox_reward_reference  # noqa: E402


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


def score_items_json(rng: np.random.Generator, n: int) -> list[dict]:
    """RL-like items: 1/2 grounding, 1/4 closed VQA, 1/4 MCQ; ~1,000-character completions."""
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
    body = json.dumps({"items": score_items_json(np.random.default_rng(0), batch)}).encode()
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
        "whole body, cached refs": lambda: _encoder.encode(score_batch(body, config, warm)),
        "whole body, cold refs": lambda: _encoder.encode(score_batch(body, config, ReferenceCache(0))),
    }
    for name, fn in phases.items():
        t = best_time(fn, 20)
        print(f"{name:30s} {t * 1e3:7.2f} ms  ({t / batch * 1e6:6.2f} us/completion)")


def start_service(port: int, workers: int = 1, reference_cache: int | None = None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("MEDMO_REWARD_TOKEN", None)
    cmd = [sys.executable, "-m", "rewards.serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    if reference_cache is not None:
        cmd += ["--reference-cache", str(reference_cache)]
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


def bench_throughput(url: str, batch: int, seconds: float, clients: int = 1) -> None:
    """`clients` threads (one connection each) posting the same batch back to back."""
    print(f"== service throughput: {clients} client(s), batch {batch}, {seconds:.0f} s ==")
    if clients > 1:
        return bench_concurrent(url, clients, seconds, batch)
    body = json.dumps({"items": score_items_json(np.random.default_rng(0), batch)}).encode()
    latencies = []
    with httpx.Client(base_url=url, timeout=60, headers={"content-type": "application/json"}) as client:
        for _ in range(3):  # warm up
            client.post("/v1/score", content=body).raise_for_status()
        t_end = time.perf_counter() + seconds
        t_start = time.perf_counter()
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            resp = client.post("/v1/score", content=body)
            latencies.append(time.perf_counter() - t0)
            assert resp.status_code == 200, resp.text[:200]
        wall = time.perf_counter() - t_start
        results = resp.json()["results"]
    assert len(results) == batch and all(r["error"] is None for r in results)
    lat = np.array(latencies) * 1e3
    print(f"{len(latencies)} requests, {len(latencies) * batch / wall:,.0f} completions/s, "
          f"latency p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms "
          f"(body {len(body) / 1e3:.0f} kB)")


def bench_concurrent(url: str, clients: int, seconds: float, batch: int = 32) -> None:
    print(f"== {clients} concurrent clients, batch {batch}, {seconds:.0f} s ==")
    body = json.dumps({"items": score_items_json(np.random.default_rng(1), batch)}).encode()
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    window = {}  # start/end of the measured window, set once every client is connected

    def open_window() -> None:
        window["start"] = time.perf_counter()
        window["end"] = window["start"] + seconds

    ready = threading.Barrier(clients, action=open_window)

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=120, headers={"content-type": "application/json"}) as client:
            try:
                client.get("/healthz")  # connect before the window opens
            except httpx.HTTPError:
                pass  # the scoring loop will count it
            ready.wait(timeout=120)
            while time.perf_counter() < window["end"]:
                t0 = time.perf_counter()
                try:
                    resp = client.post("/v1/score", content=body)
                    ok = resp.status_code == 200 and all(r["error"] is None for r in resp.json()["results"])
                    why = None if ok else f"HTTP {resp.status_code}: {resp.text[:100]}"
                except httpx.HTTPError as exc:
                    why = f"{type(exc).__name__}: {exc}"
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    if why:
                        errors.append(why)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - window["start"]
    lat = np.array(latencies) * 1e3
    print(f"{len(latencies)} requests, {len(latencies) * batch / wall:,.0f} completions/s, "
          f"latency p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms, "
          f"errors {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))


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
    runs = [(int(w), None) for w in args.workers.split(",")] + [(1, 0)]
    for workers, cache in runs:
        port = free_port()
        proc = start_service(port, workers, cache)
        print(f"#### {workers} service process(es)" + (", reference cache off" if cache == 0 else ""))
        try:
            url = f"http://127.0.0.1:{port}"
            bench_throughput(url, args.batch, args.seconds)
            if cache is None:  # 2 clients: enough to keep 2 processes busy (1→2 process scaling)
                bench_throughput(url, args.batch, args.seconds, clients=2)
                bench_concurrent(url, args.clients, args.seconds)
                metrics = httpx.get(f"{url}/metrics").text
                counts = [ln for ln in metrics.splitlines() if ln.startswith(
                    ("medmo_reward_items_total", "medmo_reward_item_errors_total", "medmo_reward_requests_total"))]
                print("service /metrics: " + "; ".join(counts))
        finally:
            proc.terminate()
            proc.wait(timeout=20)


if __name__ == "__main__":
    main()
