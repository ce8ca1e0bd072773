"""The chat/prompt format — the ONE place that turns a `Sample` into model input and target text.

SFT (sft/collator.py), rollout (rollout/worker.py) and eval all call these, so a prompt the
learner scores is byte-identical to the prompt vLLM generated from.

Two answer formats:
  "plain"         the reference answer as is;
  "think_answer"  "<think>\\n\\n</think>\\n<answer>\\n{answer}\\n</answer>" — the layout the tag-count
                  reward checks (open-r1), used by stage 3 and RL.
"""
from __future__ import annotations

import math
from typing import Any

from PIL import Image

from medmo_rl.schema import Sample

ANSWER_FORMATS = ("plain", "think_answer")
THINK_ANSWER_SYSTEM = (
    "Think inside <think> </think>, then give the final answer inside <answer> </answer>."
)


def user_text(sample: Sample) -> str:
    text = sample.prompt
    if sample.choices and sample.task in ("vqa", "text_qa") and sample.choices != ("yes", "no"):
        letters = "ABCDEFGHIJ"
        text += "\n" + "\n".join(f"{letters[i]}. {c}" for i, c in enumerate(sample.choices))
    return text


def build_messages(sample: Sample, *, answer_format: str = "plain", with_answer: bool = False) -> list[dict[str, Any]]:
    """HF chat messages; one {"type": "image"} placeholder per image, before the text."""
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer_format {answer_format!r}; allowed: {', '.join(ANSWER_FORMATS)}")
    content: list[dict[str, Any]] = [{"type": "image"} for _ in sample.images]
    content.append({"type": "text", "text": user_text(sample)})
    messages: list[dict[str, Any]] = []
    if answer_format == "think_answer":
        messages.append({"role": "system", "content": [{"type": "text", "text": THINK_ANSWER_SYSTEM}]})
    messages.append({"role": "user", "content": content})
    if with_answer:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": target_text(sample, answer_format)}]})
    return messages


def target_text(sample: Sample, answer_format: str = "plain") -> str:
    if answer_format == "think_answer":
        return f"<think>\n\n</think>\n<answer>\n{sample.answer}\n</answer>"
    return sample.answer


def render_prompt(processor: Any, sample: Sample, *, answer_format: str = "plain") -> str:
    """The prompt string up to and including the assistant header (generation prompt)."""
    return processor.apply_chat_template(
        build_messages(sample, answer_format=answer_format), add_generation_prompt=True, tokenize=False
    )


def fit_pixels(width: int, height: int, max_pixels: int, multiple: int = 32) -> tuple[int, int]:
    """Largest (w, h) with w·h ≤ max_pixels, same aspect, each a multiple of `multiple` (≥ multiple).

    Qwen3-VL needs sides divisible by patch·merge = 32; images already small enough keep their
    size rounded to that grid.
    """
    scale = min(1.0, math.sqrt(max_pixels / float(width * height)))
    w = max(multiple, int(width * scale) // multiple * multiple)
    h = max(multiple, int(height * scale) // multiple * multiple)
    return w, h


def load_image(path: str, max_pixels: int) -> Image.Image:
    """Open as RGB and resize to the stage's pixel budget (raises OSError on a corrupt file)."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        size = fit_pixels(im.width, im.height, max_pixels)
        return im if size == im.size else im.resize(size, Image.BICUBIC)
