"""The weight-sync probe: one fixed image+text sequence whose log-probabilities the learner and
the rollout engine must agree on after every weight push.

    probe = make_probe(processor)                       # both sides build the same one
    expected = hf_probe_logprobs(model, processor, probe)   # learner, transformers model
    pool.push_weights(version, model.state_dict(), expected)  # engine recomputes and compares

`logprobs[t] = log p(token_ids[t+1] | token_ids[:t+1])`, t = 0..T-2 — every position of the
sequence, the image-pad positions included, so a stale vision tower shows up as well as a stale
language model. vLLM and transformers agree on this to ~1e-6 in fp32 (measured on the tiny Qwen3-VL,
with and without an image); a larger gap means stale weights or different input preparation (image
preprocessing, mrope positions), which is why both sides use the same in-memory PIL image and the
same HF processor.
No ray/vllm imports: the learner calls this.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from medmo_rl import prompts
from medmo_rl.algos import token_logprobs
from medmo_rl.schema import Sample

PROBE_IMAGE_PX = 64  # a multiple of Qwen3-VL's patch·merge (32): no resize on either side
PROBE_SAMPLE = Sample(
    id="weight-sync-probe", task="vqa", prompt="Is there a lesion in the image? Describe it.",
    answer="Yes: a bright round nodule in the upper left.", images=("<in-memory probe image>",),
)


@dataclass(frozen=True)
class Probe:
    text: str  # chat prompt + fixed assistant continuation (ends with <|im_end|>)
    image: Image.Image  # the one image, RGB, PROBE_IMAGE_PX square
    token_ids: tuple[int, ...]  # as the HF processor tokenises text+image (image pads expanded), [T]


def probe_image(size: int = PROBE_IMAGE_PX) -> Image.Image:
    """A deterministic textured RGB image (gradients, a checkerboard and a bright disc)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    checker = ((np.floor(x * 8) + np.floor(y * 8)) % 2) * 40.0
    disc = (((x - 0.3) ** 2 + (y - 0.35) ** 2) < 0.02) * 120.0
    rgb = np.stack([x * 200 + checker, y * 200 + disc, (1 - x) * 100 + disc], axis=-1)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), mode="RGB")


def make_probe(processor: Any) -> Probe:
    text = prompts.render_prompt(processor, PROBE_SAMPLE) + prompts.target_text(PROBE_SAMPLE) + "<|im_end|>"
    image = probe_image()
    ids = processor(text=[text], images=[image], return_tensors="pt")["input_ids"][0]
    return Probe(text=text, image=image, token_ids=tuple(int(t) for t in ids))


def hf_probe_logprobs(model: Any, processor: Any, probe: Probe) -> list[float]:
    """The learner's probe log-probabilities, [T-1], computed in fp32 from a transformers model."""
    inputs = processor(text=[probe.text], images=[probe.image], return_tensors="pt")
    ids = inputs["input_ids"][0]
    if tuple(int(t) for t in ids) != probe.token_ids:
        raise ValueError("the processor tokenises the probe differently from make_probe(); rebuild the probe")
    device = next(model.parameters()).device
    inputs = {k: v.to(device) if hasattr(v, "to") else v for k, v in inputs.items()}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(**inputs).logits[0, :-1]
    finally:
        model.train(was_training)
    logprobs, _ = token_logprobs(logits, ids[1:].to(device))
    return logprobs.cpu().tolist()


def max_abs_diff(engine: list[float], expected: list[float]) -> float:
    """max_t |engine[t] - expected[t]|; a length mismatch is an infinite difference."""
    if len(engine) != len(expected):
        return float("inf")
    return max((abs(a - b) for a, b in zip(engine, expected)), default=0.0)
