"""Verifiable rewards for MedMO's RL stage: one pure function per reward plus their composite.

    from rewards import score
    score(completion, sample, num_tokens=312, config=RewardConfig())
    # {"total": 2.43, "parts": {"accuracy": 1.0, "bbox": 0.68, "tag_count": 0.75, "overlong": 0.0}}

The HTTP service (`python -m rewards.serve`, `rewards.service`) and its client (`rewards.client`)
are separate modules so that `import rewards` stays light (numpy + scipy, no fastapi/ray/torch).
"""
from rewards.accuracy import label_accuracy
from rewards.bbox import bbox_reward, bbox_reward_batch, bbox_reward_reference
from rewards.composite import PARTS, ScoreItem, ScoreResult, score, score_items
from rewards.format import tag_count
from rewards.length import soft_overlong_punishment
from rewards.parsing import ParsedCompletion, parse_completion

__all__ = [
    "PARTS", "ParsedCompletion", "ScoreItem", "ScoreResult", "bbox_reward", "bbox_reward_batch",
    "bbox_reward_reference", "label_accuracy", "parse_completion", "score", "score_items",
    "soft_overlong_punishment", "tag_count",
]
