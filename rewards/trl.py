"""Our rewards as TRL reward functions: one per part, so `trl.GRPOTrainer` logs each part
(`rewards/accuracy/mean`, ...) and weighs them with `reward_weights`.

    from rewards.trl import reward_funcs, reward_weights
    trainer = GRPOTrainer(model, reward_funcs=reward_funcs(cfg),                 # in-process
                          args=GRPOConfig(..., reward_weights=reward_weights(cfg)), train_dataset=ds)
    reward_funcs(cfg, client=RewardClient("http://127.0.0.1:8000"))             # or through the service

Each function has TRL's signature `f(prompts, completions, completion_ids=None, **columns) ->
list[float | None]`: one value per completion, None where scoring failed (TRL treats it as NaN
and leaves it out of its means). The reference of completion i comes from the dataset columns
TRL passes along: a `label` column (rewards/labels.py JSON, the same label OpenRLHF reads), or
else the record's own fields as columns (task, answer, boxes, labels, choices, image_size).
The overlong part needs each completion's length: `len(completion_ids[i])`; None without ids.

TRL calls the part functions one after the other on the same batch; they share one scorer that
scores the batch once (the four functions of one `reward_funcs` call share a memo of the last
batch, recognised by the identity of TRL's completions list).
With reward_weights(cfg), TRL's reward = Σ w·part = `rewards.score(...)["total"]`.
"""
from __future__ import annotations

import math
import threading
from typing import Any, Sequence

from medmo_rl.config import RewardConfig

from rewards.composite import PARTS, ScoreItem, ScoreResult, score_items
from rewards.labels import LabelError, decode_label, reference_from_json

RECORD_COLUMNS = ("id", "task", "answer", "boxes", "labels", "choices", "image_size", "source")


def completion_text(completion: Any) -> str:
    """TRL's completion → text: a string as is; a conversation → its assistant messages' text."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        out = []
        for message in completion:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                out.append(content)
            elif isinstance(content, list):
                out += [p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return "".join(out)
    return ""


def _references(n: int, columns: dict[str, Any]) -> list[Any]:
    """Sample (or LabelError) per completion from the dataset columns (module docstring)."""
    out: list[Any] = []
    for i in range(n):
        try:
            if "label" in columns:
                out.append(decode_label(columns["label"][i]))
            else:
                fields = {k: columns[k][i] for k in RECORD_COLUMNS if k in columns and columns[k][i] is not None}
                out.append(reference_from_json(fields))
        except LabelError as exc:
            out.append(exc)
    return out


class _Scorer:
    """Scores a TRL batch once for all part functions (in-process, or through a RewardClient)."""

    def __init__(self, config: RewardConfig, client: Any | None):
        self.config, self.client = config, client
        self._lock = threading.Lock()
        self._last: tuple[Any, list[ScoreResult]] | None = None  # (TRL's completions list, results)

    def results(self, completions: Sequence[Any], completion_ids: Sequence[Sequence[int]] | None,
                columns: dict[str, Any]) -> list[ScoreResult]:
        with self._lock:
            if self._last is not None and self._last[0] is completions:  # the list is kept alive: `is` is safe
                return self._last[1]
            results = self._score(completions, completion_ids, columns)
            self._last = (completions, results)
            return results

    def _score(self, completions, completion_ids, columns) -> list[ScoreResult]:
        refs = _references(len(completions), columns)
        results: list[ScoreResult | None] = [None] * len(completions)
        todo, items = [], []
        for i, (completion, ref) in enumerate(zip(completions, refs)):
            if isinstance(ref, LabelError):
                results[i] = ScoreResult(math.nan, {}, str(ref))
                continue
            # without ids the length is unknown: score with 0 tokens and report overlong as None
            n_tokens = len(completion_ids[i]) if completion_ids is not None else 0
            items.append(ScoreItem(completion_text(completion), n_tokens, ref))
            todo.append(i)
        scored = self.client.score(items) if self.client is not None else score_items(items, self.config)
        for i, r in zip(todo, scored):
            results[i] = r
        return results  # type: ignore[return-value]


class PartReward:
    """One part as a TRL reward function; TRL logs it under `__name__` (the part's name)."""

    def __init__(self, part: str, scorer: _Scorer):
        self.__name__ = part
        self.part, self._scorer = part, scorer

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                 completion_ids: Sequence[Sequence[int]] | None = None, **columns: Any) -> list[float | None]:
        results = self._scorer.results(completions, completion_ids, columns)
        if self.part == "overlong" and completion_ids is None:
            return [None] * len(results)
        return [r.parts[self.part] if r.error is None else None for r in results]

    def __repr__(self) -> str:
        return f"PartReward({self.part!r})"


def reward_funcs(config: RewardConfig = RewardConfig(), *, client: Any | None = None,
                 parts: Sequence[str] = PARTS) -> list[PartReward]:
    """TRL reward functions, one per part, in `parts` order (module docstring).

    client: a `rewards.client.RewardClient` to score through the HTTP service (its parts do not
    depend on the weights, so the service's config only needs the same bbox and overlong settings).
    """
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown part {unknown[0]!r}; allowed: {', '.join(PARTS)}")
    scorer = _Scorer(config, client)
    return [PartReward(p, scorer) for p in parts]


def reward_weights(config: RewardConfig = RewardConfig(), parts: Sequence[str] = PARTS) -> list[float]:
    """GRPOConfig.reward_weights matching reward_funcs(config, parts=parts): w_accuracy, w_bbox, ..."""
    return [float(getattr(config, f"w_{p}")) for p in parts]
