"""Samples → model inputs for SFT, with the loss only on the answer (paper eq. 1).

One example is

    prompt = render_prompt(sample)                 (system?, user with images, assistant header)
    target = target_text(sample) + <|im_end|>

The prompt goes through the processor WITH its images (resized to the stage's `max_pixels`), so
every <|image_pad|> is expanded to the image's token count; the target is tokenised on its own and
appended. labels = IGNORE on every prompt token (system, user, image, header) and on padding, the
token id on target tokens. A batch is right-padded; pixel_values / image_grid_thw are the
examples' images concatenated in row order (the order Qwen3-VL's M-RoPE and placeholder filling
consume them), plus mm_token_type_ids (text 0, image 1) that M-RoPE needs.

Bad data never crashes the run and is never dropped silently: a missing image, a file PIL cannot
read, an example longer than `max_seq_len` (or any other encoding error) is skipped, counted under
its reason in `skip_counts`, and its record id is logged once and kept in `skipped_ids`.

A micro-batch with no image at all (only text_qa, or everything skipped) gets one extra row holding
a blank image with no labels: the vision tower then takes part in every forward, which DDP
(without find_unused_parameters) and FSDP2 need on every rank; the row adds nothing to the loss.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from PIL import Image, UnidentifiedImageError

from medmo_rl.algos import right_pad
from medmo_rl.prompts import load_image, render_prompt, target_text
from medmo_rl.schema import Sample
from sft.loss import IGNORE

log = logging.getLogger(__name__)

END_OF_TURN = "<|im_end|>"
SKIP_REASONS = ("missing_image", "corrupt_image", "too_long", "encode_error")


@dataclass(frozen=True)
class Encoded:
    """One tokenised example."""

    sample_id: str
    input_ids: torch.Tensor  # [T] prompt ids (image pads expanded) + target ids
    labels: torch.Tensor  # [T] IGNORE on the prompt, target ids on the answer + <|im_end|>
    mm_token_type_ids: torch.Tensor  # [T] 0 text, 1 image
    pixel_values: torch.Tensor | None  # [P, D] flattened patches of its images
    image_grid_thw: torch.Tensor | None  # [n_images, 3]


@dataclass(frozen=True)
class SFTBatch:
    input_ids: torch.Tensor  # [B, T], right-padded with the pad id
    attention_mask: torch.Tensor  # [B, T], 1 on real tokens
    labels: torch.Tensor  # [B, T], IGNORE on prompt and padding
    mm_token_type_ids: torch.Tensor  # [B, T]
    pixel_values: torch.Tensor | None  # [P, D], all images of the batch in row order
    image_grid_thw: torch.Tensor | None  # [n_images, 3]
    sample_ids: tuple[str, ...]  # ids of the real rows (the blank-image row has none)

    @property
    def num_target_tokens(self) -> int:
        return int((self.labels != IGNORE).sum())

    def model_inputs(self, device: torch.device | str = "cpu") -> dict[str, Any]:
        """Keyword arguments for Qwen3VLForConditionalGeneration.forward (no labels: the loss is ours)."""
        out = {
            "input_ids": self.input_ids.to(device),
            "attention_mask": self.attention_mask.to(device),
            "mm_token_type_ids": self.mm_token_type_ids.to(device),
        }
        if self.pixel_values is not None:
            out["pixel_values"] = self.pixel_values.to(device)
            out["image_grid_thw"] = self.image_grid_thw.to(device)
        return out


class SFTCollator:
    """Call with a list of Samples → SFTBatch. Keeps count of what it skipped and why."""

    def __init__(self, processor: Any, *, answer_format: str = "plain", max_pixels: int, max_seq_len: int,
                 ensure_image: bool = True):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.answer_format = answer_format
        self.max_pixels = max_pixels
        self.max_seq_len = max_seq_len
        self.ensure_image = ensure_image
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.end_id = self.tokenizer.convert_tokens_to_ids(END_OF_TURN)
        self.skip_counts: Counter[str] = Counter()
        self.skipped_ids: dict[str, str] = {}  # record id → reason (first seen)
        self._blank: Encoded | None = None

    # -- one example ------------------------------------------------------------------------
    def _skip(self, sample_id: str, reason: str, detail: str) -> None:
        self.skip_counts[reason] += 1
        if sample_id not in self.skipped_ids:
            self.skipped_ids[sample_id] = reason
            log.warning("SFT skipped record %r (%s): %s", sample_id, reason, detail)

    def _prepare(self, sample: Sample) -> tuple[str, list[Image.Image], list[int]] | None:
        """Prompt text, resized images and target ids of one sample, or None (counted) if unusable."""
        images: list[Image.Image] = []
        for path in sample.images:
            try:
                images.append(load_image(path, self.max_pixels))
            except FileNotFoundError as exc:
                self._skip(sample.id, "missing_image", str(exc))
                return None
            except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
                self._skip(sample.id, "corrupt_image", f"{path}: {exc}")
                return None
        try:
            prompt = render_prompt(self.processor, sample, answer_format=self.answer_format)
            target = self.tokenizer(target_text(sample, self.answer_format), add_special_tokens=False)["input_ids"]
        except Exception as exc:  # noqa: BLE001 — one odd record must not end a multi-hour stage
            self._skip(sample.id, "encode_error", repr(exc))
            return None
        return prompt, images, list(target) + [self.end_id]

    def encode_many(self, samples: Sequence[Sample]) -> list[Encoded]:
        """Tokenise samples (one processor call for all), skipping and counting the unusable ones."""
        ready = [(s, p) for s in samples if (p := self._prepare(s)) is not None]
        if not ready:
            return []
        try:
            enc = self.processor(text=[p[0] for _, p in ready], images=[im for _, p in ready for im in p[1]] or None)
        except Exception:  # noqa: BLE001 — find the culprit one by one
            if len(ready) == 1:
                sample = ready[0][0]
                self._skip(sample.id, "encode_error", "the processor failed on this record")
                return []
            return [e for s, _ in ready for e in self.encode_many([s])]
        grids = enc.get("image_grid_thw")
        patches = grids.prod(-1).tolist() if grids is not None else []
        out, image_i, patch_i = [], 0, 0
        for row, (sample, (_, images, target)) in enumerate(ready):
            n_img, n_patch = len(images), int(sum(patches[image_i:image_i + len(images)]))
            pixels = enc["pixel_values"][patch_i:patch_i + n_patch] if n_img else None
            grid = grids[image_i:image_i + n_img] if n_img else None
            image_i, patch_i = image_i + n_img, patch_i + n_patch
            prompt_ids = torch.tensor(enc["input_ids"][row], dtype=torch.long)
            target_ids = torch.tensor(target, dtype=torch.long)
            length = len(prompt_ids) + len(target_ids)
            if length > self.max_seq_len:
                self._skip(sample.id, "too_long", f"{length} tokens > max_seq_len {self.max_seq_len}")
                continue
            mm = enc.get("mm_token_type_ids")
            mm = torch.tensor(mm[row], dtype=torch.long) if mm is not None else torch.zeros_like(prompt_ids)
            out.append(Encoded(
                sample_id=sample.id,
                input_ids=torch.cat([prompt_ids, target_ids]),
                labels=torch.cat([torch.full_like(prompt_ids, IGNORE), target_ids]),
                mm_token_type_ids=torch.cat([mm, torch.zeros_like(target_ids)]),
                pixel_values=pixels,
                image_grid_thw=grid,
            ))
        return out

    def encode(self, sample: Sample) -> Encoded | None:
        """One sample, or None when it is unusable (counted in skip_counts, id logged once)."""
        got = self.encode_many([sample])
        return got[0] if got else None

    def _blank_image_row(self) -> Encoded:
        if self._blank is None:
            text = "<|vision_start|>" + self.processor.image_token + "<|vision_end|>"
            enc = self.processor(text=[text], images=[Image.new("RGB", (32, 32))], return_tensors="pt")
            ids = enc["input_ids"][0]
            self._blank = Encoded("", ids, torch.full_like(ids, IGNORE), enc["mm_token_type_ids"][0],
                                  enc["pixel_values"], enc["image_grid_thw"])
        return self._blank

    # -- a batch ----------------------------------------------------------------------------
    def collate(self, examples: Sequence[Encoded]) -> SFTBatch:
        rows = list(examples)
        if not rows and not self.ensure_image:
            raise ValueError("nothing to collate: every example was skipped")
        if self.ensure_image and not any(e.pixel_values is not None for e in rows):
            rows.append(self._blank_image_row())
        pixels = [e.pixel_values for e in rows if e.pixel_values is not None]
        grids = [e.image_grid_thw for e in rows if e.image_grid_thw is not None]
        return SFTBatch(
            input_ids=right_pad([e.input_ids for e in rows], self.pad_id),
            attention_mask=right_pad([torch.ones_like(e.input_ids) for e in rows], 0),
            labels=right_pad([e.labels for e in rows], IGNORE),
            mm_token_type_ids=right_pad([e.mm_token_type_ids for e in rows], 0),
            pixel_values=torch.cat(pixels) if pixels else None,
            image_grid_thw=torch.cat(grids) if grids else None,
            sample_ids=tuple(e.sample_id for e in examples),
        )

    def __call__(self, samples: Sequence[Sample]) -> SFTBatch:
        return self.collate(self.encode_many(samples))
