"""Greedy grounding IoU of a checkpoint with transformers `generate` — for SFT tests and logging.

(The project's benchmark evaluation, on vLLM, lives in medmo_rl; this one needs no engine.)

    ev = evaluate_grounding(ckpt_dir, "…/grounding.jsonl", limit=200)   # ev.mean_iou, ev.parse_rate

Scored by `medmo_rl.grounding`, the eval's own grounding scorer: the completion's answer part is
parsed once (reasoning ignored), its 0–1000 boxes mapped to pixels and the valid ones kept; a
record's IoU is (1/G) Σ IoU over a one-to-one Hungarian matching of predicted to reference boxes
(unmatched reference boxes count 0; a prediction counts for one reference box at most). Parse rate:
share of completions whose answer holds at least one box.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from medmo_rl.grounding import score_images, summarize
from medmo_rl.prompts import load_image, render_prompt
from medmo_rl.schema import Sample, load_samples


@dataclass(frozen=True)
class GroundingEval:
    mean_iou: float
    parse_rate: float
    n: int
    examples: tuple[tuple[str, str, float], ...]  # first few (record id, completion, IoU)


def score_grounding(completions: Sequence[str], samples: Sequence[Sample]) -> tuple[list[float], list[bool]]:
    """Per-record Hungarian IoU and whether the answer holds a box (`medmo_rl.grounding.score_image`)."""
    scores = score_images(samples, completions)
    return [s.iou for s in scores], [s.parsed for s in scores]


def generate_completions(model, processor, samples: Sequence[Sample], *, answer_format: str = "plain",
                         max_pixels: int = 1280 * 1280, batch_size: int = 50, max_new_tokens: int = 64) -> list[str]:
    """Greedy completions, left-padded batches, special tokens dropped (<box>, <answer> are plain)."""
    import torch

    processor.tokenizer.padding_side = "left"
    out: list[str] = []
    for i in range(0, len(samples), batch_size):
        chunk = samples[i:i + batch_size]
        prompts = [render_prompt(processor, s, answer_format=answer_format) for s in chunk]
        images = [load_image(p, max_pixels) for s in chunk for p in s.images]
        inputs = processor(text=prompts, images=images or None, padding=True, return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        out += processor.batch_decode(ids[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def evaluate_grounding(model_dir: str | os.PathLike, records: str | os.PathLike | Sequence[Sample], *,
                       limit: int | None = None, answer_format: str = "plain", max_pixels: int = 1280 * 1280,
                       batch_size: int = 50, max_new_tokens: int = 64) -> GroundingEval:
    """Mean IoU and parse rate of `model_dir` on grounding records (a JSONL path or Samples)."""
    import torch
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

    samples = load_samples(records).samples if isinstance(records, (str, Path)) else list(records)
    samples = [s for s in samples if s.task == "grounding"][:limit]
    if not samples:
        raise ValueError(f"no grounding records in {records!r}")
    model = Qwen3VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    texts = generate_completions(model, processor, samples, answer_format=answer_format, max_pixels=max_pixels,
                                 batch_size=batch_size, max_new_tokens=max_new_tokens)
    scores = score_images(samples, texts)
    summary = summarize(samples, scores)
    examples = tuple((s.id, t, round(g.iou, 4)) for s, t, g in list(zip(samples, texts, scores))[:5])
    return GroundingEval(mean_iou=summary.mean_iou, parse_rate=summary.parse_rate, n=summary.n, examples=examples)
