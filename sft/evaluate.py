"""Greedy grounding IoU of a checkpoint with transformers `generate` — for SFT tests and logging.

(The project's benchmark evaluation, on vLLM, lives in medmo_rl; this one needs no engine.)

    ev = evaluate_grounding(ckpt_dir, "…/grounding.jsonl", limit=200)   # ev.mean_iou, ev.parse_rate

Per record: the completion is parsed with medmo_rl.boxes.parse_boxes, predicted boxes (0–1000) are
mapped to pixels with to_pixels, and the record's score is the mean over its reference boxes of
the best IoU with any predicted box (0 when nothing parses). Parse rate: share of completions with
at least one box.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from medmo_rl.boxes import is_valid_box, parse_boxes, to_pixels
from medmo_rl.metrics import matched_iou
from medmo_rl.prompts import load_image, render_prompt
from medmo_rl.schema import Sample, load_samples


@dataclass(frozen=True)
class GroundingEval:
    mean_iou: float
    parse_rate: float
    n: int
    examples: tuple[tuple[str, str, float], ...]  # first few (record id, completion, IoU)


def score_grounding(completions: Sequence[str], samples: Sequence[Sample]) -> tuple[list[float], list[bool]]:
    """Per-record IoU score and whether any box parsed (see module docstring)."""
    ious, parsed = [], []
    for text, sample in zip(completions, samples, strict=True):
        pred = [to_pixels(b, sample.image_size) for b in parse_boxes(text).boxes if is_valid_box(b)]
        parsed.append(bool(pred))
        ious.append(matched_iou(pred, list(sample.boxes)))  # the same IoU as medmo_rl.benchmarks (Hungarian)
    return ious, parsed


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
    ious, parsed = score_grounding(texts, samples)
    return GroundingEval(mean_iou=sum(ious) / len(ious), parse_rate=sum(parsed) / len(parsed), n=len(samples),
                         examples=tuple((s.id, t, round(v, 4)) for s, t, v in list(zip(samples, texts, ious))[:5]))
