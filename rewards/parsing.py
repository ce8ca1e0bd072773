"""Parse a completion ONCE into the form every reward reads, and coerce a reference to a `Sample`.

A completion is read as:
    text    the completion as generated ("" when it is not a string); tag_count reads this
    answer  the body of the LAST <answer>...</answer>; without one, the text after the reasoning
            (complete <think>...</think> blocks removed, everything after the last stray
            </think>, nothing from an unclosed <think> on: a completion cut off mid-thought
            has no answer). An unclosed <answer> gives the text after it.
    boxes   `medmo_rl.boxes.parse_boxes(answer)`: boxes as written (Qwen3-VL 0–1000) + labels
Never raises. Pure: no I/O.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from medmo_rl.boxes import ParsedBoxes, parse_boxes
from medmo_rl.schema import Sample, SampleError, validate_sample

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.S)
_ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.S)


@dataclass(frozen=True)
class ParsedCompletion:
    text: str  # the completion as generated
    answer: str  # what the model answers (module docstring), stripped
    boxes: ParsedBoxes  # parsed from `answer`, 0–1000 relative as written


def parse_completion(completion: Any) -> ParsedCompletion:
    """Split reasoning from answer and parse the answer's boxes (module docstring). Never raises."""
    text = completion if isinstance(completion, str) else ""
    answers = _ANSWER_BLOCK.findall(text)
    if answers:
        answer = answers[-1]
    else:
        rest = _THINK_BLOCK.sub("", text)
        rest = rest.rsplit("</think>", 1)[-1]
        rest = rest.split("<think>", 1)[0]
        answer = rest.rsplit("<answer>", 1)[-1]
    answer = answer.strip()
    return ParsedCompletion(text=text, answer=answer, boxes=parse_boxes(answer))


def as_reference(reference: Sample | dict[str, Any]) -> Sample:
    """A `Sample`, or a dict of record fields validated by the one schema validator.

    Scoring needs only task, answer, choices, boxes, labels and image_size, so a dict may leave
    out id, prompt and images (placeholders are filled in). Raises `SampleError` naming the field.
    """
    if isinstance(reference, Sample):
        return reference
    if not isinstance(reference, dict):
        raise SampleError("?", "reference", f"must be a record object, got {type(reference).__name__}")
    filled = {"id": "reference", "prompt": "(not used for scoring)", "images": ["(not used for scoring)"]}
    filled.update(reference)
    return validate_sample(filled, check_files=False)
