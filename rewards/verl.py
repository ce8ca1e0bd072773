"""Our rewards as verl's custom reward function.

    # verl trainer config (Hydra overrides):
    custom_reward_function.path=/path/to/medmo-rl/rewards/verl.py custom_reward_function.name=compute_score
    # optional: weights and box settings from a recipe's reward: section
    +custom_reward_function.reward_kwargs.recipe=/path/to/medmo-rl/configs/tiny.yaml

verl's reward managers call `compute_score(data_source=..., solution_str=..., ground_truth=...,
extra_info=..., **reward_kwargs)` once per response, with solution_str the decoded response
(special tokens skipped) and ground_truth the dataset's `reward_model.ground_truth`: here the
reference record as a JSON label (rewards/labels.py) or the record itself as a dict. The result
is `{"score": total, "accuracy": ..., "bbox": ..., "tag_count": ..., "invalid_label": 0.0 | 1.0}`;
verl trains on "score" and logs every key, so every call returns the same keys.

verl's DAPO reward manager applies the overlong punishment itself
(`reward_model.overlong_buffer.enable`) and does not pass the response length, so the overlong
part is left out (its weight counts as 0). A ground truth that is not a valid record scores 0.0
with invalid_label 1.0 instead of raising (one bad row must not stop a run). verl loads this file
by path (`verl.utils.import_utils.load_extern_object`), so its imports are absolute.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

from medmo_rl.config import RewardConfig, load_config

from rewards.composite import PARTS, ScoreItem, score_items
from rewards.labels import LabelError, decode_label, reference_from_json

VERL_PARTS = tuple(p for p in PARTS if p != "overlong")


@functools.lru_cache(maxsize=8)
def _config(recipe: str | None) -> RewardConfig:
    config = load_config(recipe).reward if recipe else RewardConfig()
    return dataclasses.replace(config, w_overlong=0.0)


def _plain(value: Any) -> Any:
    """Parquet gives numpy arrays where the record has lists; the record validator wants lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None,
                  recipe: str | None = None, **kwargs: Any) -> dict[str, float]:
    """{"score": Σ w·part, "accuracy", "bbox", "tag_count", "invalid_label"} (module docstring).

    recipe: a recipe YAML whose reward: section sets the weights (verl's reward_kwargs pass it);
    other kwargs verl may add (reward_router_address, ...) are ignored.
    """
    config = _config(recipe)
    zero = {"score": 0.0, **{p: 0.0 for p in VERL_PARTS}, "invalid_label": 1.0}
    try:
        ref = decode_label(ground_truth) if isinstance(ground_truth, (str, bytes)) else \
            reference_from_json(_plain(ground_truth))
    except LabelError:
        return zero
    result = score_items([ScoreItem(solution_str if isinstance(solution_str, str) else "", 0, ref)], config)[0]
    if result.error is not None:
        return {**zero, "invalid_label": 0.0}
    return {"score": result.total, **{p: result.parts[p] for p in VERL_PARTS}, "invalid_label": 0.0}
