"""The reference record as a JSON label: what OpenRLHF's `labels`, verl's `ground_truth` and a TRL
`label` column carry so an external trainer can hand our rewards the record a prompt came from.

    label = encode_label(sample)   # '{"id":"g1","task":"grounding","answer":"","boxes":[[10.0,...]],...}'
    decode_label(label)            # → Sample (validated by medmo_rl.schema, the one record validator)

A label is the JSON object of a unified sample record (medmo_rl/schema.py) without `prompt` and
`images`: the prompt column already holds both, and scoring reads neither. Fields scoring reads:
`task`, `answer`, `boxes` (absolute pixels of the original image), `labels` (one per box),
`choices`, `image_size` ([w, h], required with boxes); `id` and `source` are kept so a bad label
can be traced. A full record (with prompt and images) decodes too.

`decode_label` raises `LabelError` (a ValueError) naming the field: "label: not valid JSON (...)",
"label: must be a JSON object, got list", "label.task: unknown task 'x'; allowed: ...",
"label.boxes[0]: ...". Pure: msgspec + the schema module, no I/O.
"""
from __future__ import annotations

import threading
from typing import Any, Callable

import msgspec

from medmo_rl.schema import Sample, SampleError

from rewards.parsing import as_reference

_OMITTED = ("prompt", "images")  # in the prompt column; not read by scoring
_decode = msgspec.json.Decoder()
_encode = msgspec.json.Encoder()


class LabelError(ValueError):
    """A label that is not a valid reference record; `field` is e.g. "label.task"."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


def label_json(sample: Sample) -> dict[str, Any]:
    """The label object of a record: every field but prompt and images."""
    d = sample.to_json()
    for key in _OMITTED:
        d.pop(key)
    return d


def encode_label(sample: Sample) -> str:
    """The label string of a record (compact JSON, non-ASCII kept as UTF-8)."""
    return _encode.encode(label_json(sample)).decode("utf-8")


def reference_from_json(obj: Any) -> Sample:
    """A decoded label object → `Sample`; LabelError naming the field on any problem."""
    if not isinstance(obj, dict):
        raise LabelError("label", f"must be a JSON object, got {type(obj).__name__}")
    try:
        return as_reference(obj)
    except SampleError as exc:
        raise LabelError(f"label.{exc.field_name}", exc.problem) from None
    except (TypeError, ValueError, OverflowError) as exc:  # e.g. image_size [1e300, 2] → int overflow
        raise LabelError("label", f"{type(exc).__name__}: {exc}") from None


def decode_label(label: str | bytes) -> Sample:
    """Parse and validate a label (module docstring); raises LabelError naming the field."""
    if not isinstance(label, (str, bytes)):
        raise LabelError("label", f"must be a JSON string, got {type(label).__name__}")
    try:
        obj = _decode.decode(label)
    except (msgspec.DecodeError, RecursionError) as exc:  # malformed, out-of-range numbers, too deep
        raise LabelError("label", f"not valid JSON ({str(exc)[:120]})") from None
    return reference_from_json(obj)


class ReferenceCache:
    """Validated references by their raw JSON, so a record is validated once, not once per completion.

    An RL batch scores G completions of each prompt against one reference, and OpenRLHF posts each
    completion in its own request with the same label: validation (≈ 20 µs a record) would
    otherwise cost as much as scoring. Holds `Sample`s and the errors of bad ones (a bad label
    repeats just as often); at most `max_entries`, oldest dropped first. Thread-safe.
    max_entries=0 disables it.
    """

    def __init__(self, max_entries: int = 8192):
        self.max_entries = max_entries
        self._entries: dict[bytes | str, Sample | LabelError] = {}
        self._lock = threading.Lock()

    def get(self, key: bytes | str, build: Callable[[bytes | str], Sample]) -> Sample:
        """The Sample for key (built by build(key) on a miss); re-raises a cached LabelError."""
        hit = self._entries.get(key)
        if hit is None:
            try:
                hit = build(key)
            except LabelError as exc:
                hit = exc
            if self.max_entries > 0:
                with self._lock:
                    if len(self._entries) >= self.max_entries:
                        del self._entries[next(iter(self._entries))]
                    self._entries[key] = hit
        if isinstance(hit, LabelError):
            raise LabelError(hit.field, hit.problem)  # a fresh one: threads must not share a traceback
        return hit

    def __len__(self) -> int:
        return len(self._entries)
