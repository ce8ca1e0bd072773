"""What a completion answers, and whether that is the reference's answer — the ONE home of
answer normalisation and matching, used by the reward (`rewards.accuracy`, `rewards.parsing`) and
by the eval (`medmo_rl.benchmarks`: closed accuracy is `label_accuracy`, the open-answer metrics of
`medmo_rl.metrics` compare `normalize_answer` forms), so the two score a (completion, reference)
pair alike.

Parse a completion ONCE into the form every reward reads, and coerce a reference to a `Sample`.

A completion is read as:
    text    the completion as generated ("" when it is not a string); tag_count reads this
    answer  the body of the LAST <answer>...</answer>; without one, the text after the reasoning
            (complete <think>...</think> blocks removed, everything after the last stray
            </think>, nothing from an unclosed <think> on: a completion cut off mid-thought
            has no answer). An unclosed <answer> gives the text after it.
    boxes   `medmo_rl.boxes.parse_boxes(answer)`: boxes as written (Qwen3-VL 0–1000) + labels
Never raises. Pure: no I/O.

Label accuracy (MedMO Fig. 2):

The answer is read from the completion by `parse_completion` (last <answer> body,
else the text after the reasoning). Text is compared after `normalize_answer`: lowercase,
punctuation → space, articles (a, an, the) dropped, whitespace collapsed. SQuAD deletes the
punctuation instead; here "x-ray" is "x ray" and "(C)" is "c".
Rules, first that applies, each giving 1.0 or 0.0 unless said otherwise:

1. grounding: the fraction of the reference's unique (normalized, non-empty) labels that the
   answer names — as the label of a parsed box, or as whole words anywhere in the answer.
   No labels to check → 0.5 (neutral, as App. A.1 does for boxes when G = 0).
2. MCQ (reference has choices): the gold option is the choice equal to the reference answer,
   else the letter the reference answer gives ("B", "(B)", "B. ..."). The predicted option is a
   leading letter ("C", "(C) ...", "C. ...", "Answer: C"), else the choice the answer equals,
   else the one choice named as whole words in the answer, a choice inside another named one not
   counting ("no pneumonia" names that, not "pneumonia"; two named → none). 1.0 when they agree.
   When the gold option cannot be identified the rule falls through to 4.
3. closed (reference answer normalizes to yes / no / maybe): the answer's first word must be it.
4. open: the normalized answer equals the normalized reference answer.
Never raises on a completion; a bad reference raises `SampleError` naming the field.
"""
from __future__ import annotations

import functools
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

_PUNCT = re.compile(r"[^\w\s]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_CLOSED = ("yes", "no", "maybe")
_LETTER = re.compile(
    r"^\s*(?:(?:the\s+)?(?:correct\s+)?(?:answer|option)\s*(?:is)?\s*[:\-]?\s*)?\(?([A-Z])\)?(?:[.):]|\s*$)",
    re.I,
)
NO_LABELS_ACCURACY = 0.5


@functools.lru_cache(maxsize=1 << 16)  # labels, choices and a group's answers repeat: each is normalised once
def normalize_answer(text: str) -> str:
    """lowercase → punctuation to spaces → drop articles → collapse whitespace:
    "The Left-Lung, (PA)!" → "left lung pa", "X-ray" → "x ray" (SQuAD would give "xray")."""
    text = _PUNCT.sub(" ", text.lower())
    return " ".join(_ARTICLES.sub(" ", text).split())


def _contains_words(haystack: str, needle: str) -> bool:
    return bool(needle) and f" {needle} " in f" {haystack} "


def _letter_index(text: str, n_choices: int, *, any_case: bool) -> int | None:
    m = _LETTER.match(text)
    if m is None:
        return None
    letter = m.group(1)
    # "a nodule ..." must not read as option A: a lowercase letter counts only when the caller allows
    if not any_case and not letter.isupper():
        return None
    idx = ord(letter.upper()) - ord("A")
    return idx if idx < n_choices else None


def _choice_index(text: str, choices: tuple[str, ...], *, search: bool) -> int | None:
    norm = normalize_answer(text)
    options = [normalize_answer(c) for c in choices]
    if norm in options:
        return options.index(norm)
    if not search:
        return None
    found = {options[i] for i, o in enumerate(options) if _contains_words(norm, o)}
    # "no pneumonia" also names "pneumonia": an option inside another named one does not count
    named = [o for o in found if not any(o != other and _contains_words(other, o) for other in found)]
    return options.index(named[0]) if len(named) == 1 else None


def _grounding_accuracy(parsed: ParsedCompletion, ref: Sample) -> float:
    wanted = {normalize_answer(lab) for lab in ref.labels} - {""}
    if not wanted:
        return NO_LABELS_ACCURACY
    named = {normalize_answer(lab) for lab in parsed.boxes.labels}
    missing = wanted - named
    if missing:  # only then is the answer's text searched (most answers label every box)
        text = normalize_answer(parsed.answer)
        missing = {lab for lab in missing if not _contains_words(text, lab)}
    return (len(wanted) - len(missing)) / len(wanted)


def _mcq_accuracy(answer: str, ref: Sample) -> float | None:
    n = len(ref.choices)
    gold = _choice_index(ref.answer, ref.choices, search=False)
    if gold is None:
        gold = _letter_index(ref.answer, n, any_case=True)
    if gold is None:
        return None
    pred = _letter_index(answer, n, any_case=len(answer.strip()) == 1)
    if pred is None:
        pred = _choice_index(answer, ref.choices, search=True)
    return float(pred == gold)


def label_accuracy(completion: str | ParsedCompletion, reference: Sample | dict[str, Any]) -> float:
    """Accuracy of the answer against the reference (module docstring for the rules); in [0, 1].

    completion: the raw completion, or its `ParsedCompletion` (the composite parses once).
    reference:  a `Sample` or a dict of record fields (id, prompt, images may be left out).
    """
    ref = as_reference(reference)
    parsed = completion if isinstance(completion, ParsedCompletion) else parse_completion(completion)
    if ref.task == "grounding":
        return _grounding_accuracy(parsed, ref)
    if ref.choices:
        acc = _mcq_accuracy(parsed.answer, ref)
        if acc is not None:
            return acc
    gold = normalize_answer(ref.answer)
    pred = normalize_answer(parsed.answer)
    if gold in _CLOSED:
        return float(pred.split(" ", 1)[0] == gold)
    return float(bool(gold) and pred == gold)
