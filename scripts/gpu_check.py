"""One SFT step and one DAPO learner step on the 2B-shaped Qwen3-VL, on the GPU (FSDP2 + bf16)
against the CPU in fp32, with tokens/s and MFU. Run through scripts/gpu_check.sh.

Needs torch and transformers only (no vLLM, no Ray, no network, no tokenizer): the model is
medmo_rl.shapes.cut_config("2b") with random weights built in memory, the inputs are synthetic
token ids around real image-pad ids plus one generated image. The steps are the project's own
code: sft.train._train_step (SFT, eq. 1) and medmo_rl.learner.Learner.train_step (DAPO), on a
model wrapped by medmo_rl.parallel.wrap_for_training.

    reference   CPU, fp32 weights and compute, no wrapper
    check       CUDA: a 1-rank process group, FSDP2 (fully_shard per block and layer), bf16
                compute with fp32 master weights and fp32 gradient reduction
                no CUDA: the same steps under bf16 autocast on the CPU (the SFT trainer's CPU
                bf16 path) — FSDP2, NCCL and MFU are skipped and say so
Both start from the same weights and see the same batches: SFT step 1, SFT step 2 (whose loss is
the loss after the first update), then one DAPO train_step whose engine log-probs are the
reference's π_old, so the check's `engine_logprob_mismatch` is the bf16-vs-fp32 log-prob gap.
On an on-policy first step the DAPO loss is −Σ A_t / N whatever the weights, so the gradient
norm, the entropy and the log-prob gap are what test the model there.

Exit status 1 when any compared figure is outside its tolerance (TOLERANCES), 0 otherwise.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medmo_rl.config import RLConfig, SFTStageConfig  # noqa: E402
from medmo_rl.learner import Learner  # noqa: E402
from medmo_rl.parallel import adamw, wrap_for_training  # noqa: E402
from medmo_rl.probe import probe_image  # noqa: E402
from medmo_rl.records import TrainItem  # noqa: E402
from medmo_rl.schema import Sample  # noqa: E402
from medmo_rl.shapes import PAD_ID, TOKEN_IDS, cut_config, parameter_counts, random_model  # noqa: E402
from sft.collator import SFTBatch  # noqa: E402
from sft.loss import IGNORE  # noqa: E402
from sft.train import _train_step  # noqa: E402

# bf16 keeps 8 mantissa bits (relative step 2^-8 ≈ 0.4 %). Measured on the CPU (autocast vs fp32,
# this script's defaults): SFT losses agree to ~1e-3 of ln V ≈ 11.9, log-probs to ~2e-2.
TOLERANCES = {
    "sft_loss_1": ("abs", 0.05),  # nats per token, before any update
    "sft_loss_2": ("abs", 0.05),  # after one AdamW step
    "sft_grad_norm_1": ("rel", 0.05),
    "dapo_entropy": ("abs", 0.05),  # nats per token
    "dapo_grad_norm": ("rel", 0.05),
    "dapo_logprob_gap_mean": ("max", 0.05),  # mean |log π_old(bf16) − log π_old(fp32)| per token
}
# dense bf16 tensor-core peak, FLOP/s (vendor data sheets; sparsity not counted)
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12}


@dataclasses.dataclass(frozen=True)
class Inputs:
    sft: list[SFTBatch]
    items: list[TrainItem]
    tokens: int  # tokens through the model per SFT step


def make_inputs(work: Path, *, batch: int, prompt_tokens: int, answer_tokens: int, image_px: int, seed: int) -> Inputs:
    """B rows `<|vision_start|> <|image_pad|>×n <|vision_end|> text… answer…`, one shared image."""
    from transformers import Qwen2VLImageProcessor

    image_path = work / f"image{image_px}.png"
    probe_image(image_px).save(image_path)
    processor = Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3,
                                      image_std=[0.5] * 3, size={"shortest_edge": 32 * 32, "longest_edge": image_px**2})
    pix = processor(images=[probe_image(image_px)], return_tensors="pt")
    n_image = int(pix["image_grid_thw"].prod()) // 4
    gen = torch.Generator().manual_seed(seed)
    rows, answers = [], []
    for _ in range(batch):
        text = torch.randint(0, 151_000, (prompt_tokens,), generator=gen).tolist()
        rows.append([TOKEN_IDS["vision_start_token_id"]] + [TOKEN_IDS["image_token_id"]] * n_image
                    + [TOKEN_IDS["vision_end_token_id"]] + text)
        answers.append(torch.randint(0, 151_000, (answer_tokens,), generator=gen).tolist() + [151645])
    ids = torch.tensor([r + a for r, a in zip(rows, answers)])
    labels = torch.tensor([[IGNORE] * len(r) + a for r, a in zip(rows, answers)])
    sft = SFTBatch(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels,
                   mm_token_type_ids=(ids == TOKEN_IDS["image_token_id"]).long(),
                   pixel_values=pix["pixel_values"].repeat(batch, 1), image_grid_thw=pix["image_grid_thw"].repeat(batch, 1),
                   sample_ids=tuple(f"row{i}" for i in range(batch)))
    sample = Sample(id="gpu-check", task="vqa", prompt="-", answer="-", images=(str(image_path),))
    items = [TrainItem(sample=sample, prompt_token_ids=tuple(r), completion_token_ids=tuple(a), engine_logprobs=(),
                       advantage=(1.0, -1.0, 0.5, -0.5)[i % 4]) for i, (r, a) in enumerate(zip(rows, answers))]
    return Inputs(sft=[sft], items=items, tokens=int(ids.numel()))


def learner_around(model: torch.nn.Module, device: torch.device, rl: RLConfig, image_px: int) -> Learner:
    """A Learner on an in-memory model. Learner.__init__ loads a checkpoint folder with a tokenizer,
    which this host may not have; these are the attributes __init__ would set for a 1-rank learner."""
    from transformers import Qwen2VLImageProcessor

    learner = Learner.__new__(Learner)
    learner.rl, learner.rank, learner.world_size, learner.max_pixels, learner.total_steps = rl, 0, 1, image_px**2, 1
    learner.device, learner.model, learner.train_model, learner.ref_model = device, model, model, None
    learner.processor = SimpleNamespace(
        image_processor=Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3,
                                              image_std=[0.5] * 3,
                                              size={"shortest_edge": 32 * 32, "longest_edge": image_px**2}),
        tokenizer=SimpleNamespace(pad_token_id=PAD_ID))
    learner.image_token_id = TOKEN_IDS["image_token_id"]
    learner.vision_ids = {TOKEN_IDS[k] for k in ("image_token_id", "video_token_id", "vision_start_token_id",
                                                  "vision_end_token_id")}
    learner.pad_id = PAD_ID
    learner._make_optimizer()
    return learner


def run_steps(model, device: torch.device, inputs: Inputs, *, bf16_autocast: bool, engine_logprobs, image_px: int,
              timed_steps: int = 0) -> dict:
    """SFT step 1, SFT step 2, one DAPO train_step (see module docstring); returns the figures."""
    cfg = SFTStageConfig(lr=1e-4, warmup_ratio=0.0, lr_scheduler="constant", grad_clip=1.0, bf16=True)
    optimizer = adamw(model, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    out = {}
    for k in (1, 2):
        sums, grad_norm, _ = _train_step(model, optimizer, scheduler, inputs.sft, cfg, device, 1, bf16_autocast)
        out[f"sft_loss_{k}"], out[f"sft_grad_norm_{k}"] = sums[0] / sums[3], grad_norm
    if timed_steps:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(timed_steps):
            _train_step(model, optimizer, scheduler, inputs.sft, cfg, device, 1, bf16_autocast)
        if device.type == "cuda":
            torch.cuda.synchronize()
        out["sft_tokens_per_s"] = timed_steps * inputs.tokens / (time.perf_counter() - t0)
    del optimizer
    rl = RLConfig(lr=1e-4, warmup_ratio=0.0, batch_size=len(inputs.items), grad_accum=1, lr_scheduler="constant",
                  num_learners=1, bf16=True)
    learner = learner_around(model, device, rl, image_px)
    items = inputs.items
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_autocast):
        old = engine_logprobs or learner.logprobs(items)
        items = [dataclasses.replace(it, engine_logprobs=tuple(lp)) for it, lp in zip(items, old)]
        n_tokens = sum(len(it.completion_token_ids) for it in items)
        stats = learner.train_step([items], [n_tokens])
    out.update(dapo_loss=stats.loss, dapo_entropy=stats.entropy, dapo_grad_norm=stats.grad_norm,
               dapo_logprob_gap_mean=stats.engine_logprob_mismatch, dapo_logprob_gap_max=stats.engine_logprob_mismatch_max)
    out["_old_logprobs"] = old
    return out


def compare(ref: dict, got: dict) -> list[str]:
    failures = []
    print(f"{'figure':<24}{'CPU fp32':>14}{'check':>14}   tolerance")
    for key, (kind, tol) in TOLERANCES.items():
        a, b = ref[key], got[key]
        if kind == "abs":
            ok, shown = abs(a - b) <= tol, f"|Δ| ≤ {tol}"
        elif kind == "rel":
            ok, shown = abs(a - b) <= tol * abs(a), f"|Δ|/ref ≤ {tol}"
        else:
            ok, shown = b <= tol, f"≤ {tol}"
        ok = ok and math.isfinite(b)
        print(f"{key:<24}{a:>14.6f}{b:>14.6f}   {shown}  {'ok' if ok else 'FAIL'}")
        if not ok:
            failures.append(f"{key}: reference {a:.6g}, check {b:.6g} ({shown})")
    return failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="2b", choices=["2b", "8b"])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--answer-tokens", type=int, default=16)
    ap.add_argument("--image-px", type=int, default=64)
    ap.add_argument("--timed-steps", type=int, default=None, help="SFT steps timed for tokens/s (default: 5 on CUDA, 0 on CPU)")
    ap.add_argument("--freeze-embeddings", choices=["auto", "yes", "no"], default="auto",
                    help="keep the 151,936-row embedding (and lm_head) out of the steps; auto: yes on CPU only "
                         "(its dense gradient + AdamW state is ~4 GB and ~40 s there)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    freeze = args.freeze_embeddings == "yes" or (args.freeze_embeddings == "auto" and not cuda)
    timed = args.timed_steps if args.timed_steps is not None else (5 if cuda else 0)
    torch.set_num_threads(max(1, min(os.cpu_count() or 1, 16)))
    print(f"gpu_check: shape {args.shape} (2 text layers, 2 vision blocks), batch {args.batch}, "
          f"image {args.image_px}px, embeddings {'frozen' if freeze else 'trained'}, CUDA: {cuda}")
    t_start = time.perf_counter()
    config = cut_config(args.shape)
    model = random_model(config, args.seed, dtype="float32").train()
    model.config.use_cache = False
    if freeze:
        model.get_input_embeddings().requires_grad_(False)
        model.get_output_embeddings().requires_grad_(False)
    initial = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    print(f"  built in {time.perf_counter() - t_start:.1f} s: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M "
          f"parameters, {sum(v.numel() for v in initial.values()) / 1e6:.0f}M trained")
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        inputs = make_inputs(Path(tmp), batch=args.batch, prompt_tokens=args.prompt_tokens,
                             answer_tokens=args.answer_tokens, image_px=args.image_px, seed=args.seed)
        t0 = time.perf_counter()
        ref = run_steps(model, torch.device("cpu"), inputs, bf16_autocast=False, engine_logprobs=None,
                        image_px=args.image_px)
        print(f"  CPU fp32 reference: {time.perf_counter() - t0:.1f} s")
        with torch.no_grad():  # the same starting weights for the check
            for n, p in model.named_parameters():
                if n in initial:
                    p.copy_(initial[n])
        del initial
        t0 = time.perf_counter()
        if cuda:
            device = torch.device("cuda", 0)
            torch.cuda.set_device(device)
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", "29517")
            dist.init_process_group("nccl", rank=0, world_size=1)
            model = wrap_for_training(model, device, bf16=True)  # FSDP2: the process group is up
            assert hasattr(model, "set_requires_gradient_sync"), "wrap_for_training did not apply FSDP2"
            torch.cuda.reset_peak_memory_stats()
            got = run_steps(model, device, inputs, bf16_autocast=False, engine_logprobs=ref["_old_logprobs"],
                            image_px=args.image_px, timed_steps=timed)
            label = "CUDA FSDP2 + bf16"
        else:
            print("  SKIP FSDP2 + bf16 on CUDA, NCCL and MFU: no CUDA device; checking bf16 autocast on the CPU instead")
            got = run_steps(model, torch.device("cpu"), inputs, bf16_autocast=True, engine_logprobs=ref["_old_logprobs"],
                            image_px=args.image_px, timed_steps=timed)
            label = "CPU bf16 autocast"
        print(f"  {label}: {time.perf_counter() - t0:.1f} s")
    failures = compare(ref, got)
    counts = parameter_counts(config)
    # training FLOPs per token ≈ 6 × the weights each token multiplies (every matrix but the embedding
    # lookup; lm_head counted, tied or not); attention's S² term and the vision tower left out
    flop_params = counts["total"] - counts["embed"] - counts["lm_head"] + config.text_config.vocab_size * config.text_config.hidden_size
    if "sft_tokens_per_s" in got:
        tps = got["sft_tokens_per_s"]
        name = torch.cuda.get_device_name(0) if cuda else "cpu"
        peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
        mfu = f"{6 * flop_params * tps / peak:.1%} of {peak / 1e12:.0f} TFLOP/s ({name})" if peak else f"n/a ({name}: peak unknown)"
        print(f"tokens/s {tps:,.0f} (SFT, {timed} steps × {inputs.tokens} tokens); MFU = 6·{flop_params / 1e6:.0f}M·tokens/s / peak = {mfu}")
        if cuda:
            print(f"peak CUDA memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    else:
        print("tokens/s, MFU: not measured (no timed steps)")
    if dist.is_initialized():
        dist.destroy_process_group()
    print(f"gpu_check: {'FAILED' if failures else 'passed'} in {time.perf_counter() - t_start:.1f} s")
    for f in failures:
        print("  " + f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
