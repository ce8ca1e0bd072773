"""Benchmark of SFT data at the paper's scale: JSONL lists (old) vs memory-mapped Arrow with batches
collated ahead in a DataLoader process (new).

    python bench/data_bench.py [--records 1000000] [--images 2000] [--image-share 0.05] [--steps 40]
                               [sft.prefetch_steps=4 ...]   (overrides of configs/tiny.yaml)

Builds a --records mixture (text_qa records, plus grounding records that reuse --images synthetic
64 px images), converts it to Arrow once (timed: the one-time cost), then runs one subprocess per
path playing one SFT worker of the tiny default's stage 2 (rank 0 of sft.num_workers, the stage's
batch, max_pixels and mixture-like weights 0.85 grounding / 0.15 text, one torch thread):
1. RSS growth of the worker from opening the mixture, and its anonymous part (psutil; model,
   processor, collator and the `datasets` library are loaded first, in both paths, so the growth
   is the data's). Goal (new): ≤ 300 MB at 1M records;
2. time to the first batch, from opening the data to the first collated step. Goal (new): ≤ 5 s;
3. steps/s the data path delivers on its own vs steps/s the tiny SFT step (forward, backward,
   AdamW) consumes; RSS growth after the training steps (their activations and AdamW state too);
4. --steps training steps fed by the data path: wait share = time blocked on the next batch /
   loop time, over steps 2..N (step 1 includes filling the prefetch queue). Goal (new): ~0.
Both paths must give the same sample ids for the first steps (checked). A benchmark, not a
test: numbers depend on the machine and on what else runs on it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WEIGHTS = {"images": 0.85, "text": 0.15}  # like stage 2's mixture: mostly grounding
CHECK_STEPS = 3  # steps whose sample ids both paths must agree on


def build_mixture(work: Path, records: int, images: int, image_share: float) -> tuple[dict[str, Path], bool]:
    """work/images.jsonl (grounding records cycling over `images` synthetic images) + work/text.jsonl;
    False when an earlier run's files were reused."""
    from medmo_rl.schema import load_samples
    from medmo_rl.synthetic import generate

    stamp = f"{records} {images} {image_share}\n"
    paths = {"images": work / "images.jsonl", "text": work / "text.jsonl"}
    if (work / "STAMP").is_file() and (work / "STAMP").read_text() == stamp:
        return paths, False
    syn = generate(work / "synthetic", images, seed=0, size=64)
    pools = {"images": [s.to_json() for s in load_samples(syn["grounding"]).samples],
             "text": [s.to_json() for s in load_samples(syn["text_qa"]).samples]}
    counts = {"images": round(records * image_share)}
    counts["text"] = records - counts["images"]
    for name, pool in pools.items():
        with open(paths[name], "w") as f:
            for j in range(counts[name]):
                rec = dict(pool[j % len(pool)], id=f"{name}-{j}")
                f.write(json.dumps(rec) + "\n")
    (work / "STAMP").write_text(stamp)
    return paths, True


def run_worker(kind: str, manifest: dict, steps: int, deliver: int, overrides: list[str]) -> dict:
    """One SFT worker in this process; returns its figures (the parent runs it as a subprocess)."""
    import datasets  # noqa: F401 — imported before the baseline: its ~80 MB are not the data's
    import psutil
    import torch

    torch.set_num_threads(1)  # a Ray Train worker with sft.cpus_per_worker = 1
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

    from medmo_rl.arrow_store import open_arrow
    from medmo_rl.config import load_config
    from medmo_rl.parallel import adamw
    from medmo_rl.schema import load_samples
    from sft.collator import SFTCollator
    from sft.loader import StepBatches, prefetched
    from sft.mixture import MixtureStream
    from sft.train import _train_step

    cfg = load_config(ROOT / "configs" / "tiny.yaml", overrides)
    stage, world = cfg.sft.stage2, cfg.sft.num_workers
    model = Qwen3VLForConditionalGeneration.from_pretrained(manifest["model"], dtype=torch.float32)
    model.config.use_cache = False
    model.train()
    processor = AutoProcessor.from_pretrained(manifest["model"])
    collator = SFTCollator(processor, answer_format=stage.answer_format, max_pixels=stage.max_pixels,
                           max_seq_len=stage.max_seq_len)
    optimizer = adamw(model, lr=stage.lr, betas=(stage.adam_beta1, stage.adam_beta2), weight_decay=stage.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    me = psutil.Process()
    mem0 = me.memory_info()

    t0 = time.perf_counter()
    if kind == "old":
        parts = [load_samples(manifest["jsonl"][k]).samples for k in WEIGHTS]
    else:
        parts = [open_arrow(manifest["arrow"][k]).samples for k in WEIGHTS]
    load_s = time.perf_counter() - t0
    mem_loaded = me.memory_info()
    stream = MixtureStream([len(p) for p in parts], list(WEIGHTS.values()), seed=0)
    total = 1 + deliver + steps
    data = prefetched(StepBatches(stream, parts, collator, batch_size=stage.batch_size, grad_accum=stage.grad_accum,
                                  rank=0, world=world, start_step=0, total_steps=total),
                      workers=0 if kind == "old" else cfg.sft.loader_workers, prefetch_steps=cfg.sft.prefetch_steps)
    first = next(data)
    first_s = time.perf_counter() - t0
    ids = [[b.sample_ids for b in first.batches]]

    t1 = time.perf_counter()
    for _ in range(deliver):  # the data path alone, as fast as it goes
        ids.append([b.sample_ids for b in next(data).batches])
    deliver_s = time.perf_counter() - t1

    waits, computes = [], []
    for _ in range(steps):
        t = time.perf_counter()
        item = next(data)
        waits.append(time.perf_counter() - t)
        t = time.perf_counter()
        _train_step(model, optimizer, scheduler, item.batches, stage, torch.device("cpu"), 1, False)
        computes.append(time.perf_counter() - t)
    loader_uss = sum(c.memory_full_info().uss for c in me.children(recursive=True))  # its own pages only
    rss_steps = me.memory_info().rss
    data.close()
    steady_wait, steady_loop = sum(waits[1:]), sum(waits[1:]) + sum(computes[1:])
    return {"kind": kind, "records": sum(len(p) for p in parts), "load_s": load_s,
            "rss_growth_mb": (mem_loaded.rss - mem0.rss) / 2**20, "rss_after_steps_mb": (rss_steps - mem0.rss) / 2**20,
            # anonymous = RSS less file-backed pages (the mapped table, reclaimable page cache)
            "anon_growth_mb": (mem_loaded.rss - mem_loaded.shared - mem0.rss + mem0.shared) / 2**20,
            "loader_uss_mb": loader_uss / 2**20, "first_batch_s": first_s, "delivered_steps_per_s": deliver / deliver_s,
            "consumed_steps_per_s": len(computes) / sum(computes), "wait_share": steady_wait / steady_loop,
            "first_wait_s": waits[0], "max_wait_s": max(waits[1:]),
            "median_wait_s": sorted(waits[1:])[len(waits[1:]) // 2], "ids": ids[:CHECK_STEPS],
            "per_worker_batch": len(first.batches[0].sample_ids)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--images", type=int, default=2000, help="synthetic images the grounding records reuse")
    ap.add_argument("--image-share", type=float, default=0.05, help="share of the records that are grounding")
    ap.add_argument("--steps", type=int, default=40, help="training steps fed by each path")
    ap.add_argument("--deliver", type=int, default=30, help="steps drawn from each path with no training")
    ap.add_argument("--workdir", default="/tmp/medmo-data-bench")
    ap.add_argument("overrides", nargs="*", help="dotted overrides of configs/tiny.yaml, e.g. sft.prefetch_steps=4")
    ap.add_argument("--worker", choices=("old", "new"), help=argparse.SUPPRESS)
    ap.add_argument("--manifest", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(run_worker(args.worker, json.loads(args.manifest), args.steps, args.deliver,
                                                    args.overrides)))
        return

    from medmo_rl.arrow_store import open_arrow, to_arrow
    from medmo_rl.tiny_model import resolve_model

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    jsonl, built = build_mixture(work, args.records, args.images, args.image_share)
    build_s = time.perf_counter() - t
    shutil.rmtree(work / "arrow", ignore_errors=True)  # time a real conversion, not a cache hit
    t = time.perf_counter()
    arrow = {k: to_arrow(p, work / "arrow") for k, p in jsonl.items()}
    convert_s = time.perf_counter() - t
    rejected = sum(len(open_arrow(a).rejected) for a in arrow.values())
    manifest = {"model": str(resolve_model("", work / "models", seed=0)),
                "jsonl": {k: str(p) for k, p in jsonl.items()}, "arrow": {k: str(p) for k, p in arrow.items()}}
    n_img = round(args.records * args.image_share)
    print(f"== {args.records:,}-record mixture: {args.records - n_img:,} text_qa + {n_img:,} grounding over "
          f"{args.images:,} images (weights {WEIGHTS}) ==")
    size_mb = sum(p.stat().st_size for p in jsonl.values()) / 2**20
    made = f"JSONL written in {build_s:.1f} s" if built else "JSONL of an earlier run reused"
    print(f"{made} ({size_mb:.0f} MB); "
          f"Arrow conversion (once, validated, cached): {convert_s:.1f} s, {rejected} rejected")

    res = {}
    for kind in ("old", "new"):
        out = subprocess.run([sys.executable, __file__, "--worker", kind, "--manifest", json.dumps(manifest),
                              "--steps", str(args.steps), "--deliver", str(args.deliver), *args.overrides],
                             capture_output=True, text=True, cwd=ROOT)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if out.returncode or line is None:
            sys.exit(f"{kind} worker failed:\n{out.stderr[-3000:]}")
        res[kind] = json.loads(line.removeprefix("RESULT "))
    old, new = res["old"], res["new"]
    assert old["records"] == new["records"] == args.records
    same = old["ids"] == new["ids"]
    print(f"one SFT worker of the tiny stage 2: {new['per_worker_batch']} examples per step, one torch thread; "
          f"new path: sft.loader_workers, sft.prefetch_steps of configs/tiny.yaml {' '.join(args.overrides)}; "
          f"{args.steps} training steps")
    print(f"{'path':4s} {'open data':>10s} {'RSS growth':>11s} {'(anon)':>8s} {'RSS after steps':>16s} "
          f"{'first batch':>12s} {'delivered':>11s} {'step consumes':>14s} {'wait share':>11s} {'median/max wait':>16s}")
    for r in (old, new):
        print(f"{r['kind']:4s} {r['load_s']:9.2f}s {r['rss_growth_mb']:8.0f} MB {r['anon_growth_mb']:5.0f} MB "
              f"{r['rss_after_steps_mb']:13.0f} MB "
              f"{r['first_batch_s']:11.2f}s {r['delivered_steps_per_s']:7.1f} st/s "
              f"{r['consumed_steps_per_s']:9.1f} st/s "
              f"{r['wait_share']:10.1%} {r['median_wait_s'] * 1e3:6.1f} / {r['max_wait_s'] * 1e3:.0f} ms")
    print(f"new / old: RSS growth {new['rss_growth_mb'] / max(old['rss_growth_mb'], 1e-9):.3f}x, "
          f"first batch {new['first_batch_s'] / old['first_batch_s']:.3f}x, "
          f"wait share {new['wait_share']:.1%} vs {old['wait_share']:.1%}; "
          f"loader process USS {new['loader_uss_mb']:.0f} MB (pages of its own; the rest it shares with the worker)")
    print(f"same sample ids, first {CHECK_STEPS} steps: {'yes' if same else 'NO'}; "
          f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    goals = {"RSS growth <= 300 MB": new["rss_growth_mb"] <= 300, "first batch <= 5 s": new["first_batch_s"] <= 5,
             "delivered > consumed": new["delivered_steps_per_s"] > new["consumed_steps_per_s"],
             "wait share < 2 %": new["wait_share"] < 0.02}
    print("goals (new path): " + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in goals.items()))
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
