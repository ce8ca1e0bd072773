"""Typed records that travel between the RL stage's phases (STYLE.md: no string-keyed dicts).

    Sample (medmo_rl.schema) ──rollout──> Group(sample, completions[G]) ──rewards──> ScoredGroup
    ──advantages/filter──> TrainItem per completion ──learner──> new weights + LearnStats
(ScoredGroup lives in medmo_rl/driver/rl_loop.py, LearnStats in medmo_rl/learner.py.)
"""
from __future__ import annotations

from dataclasses import dataclass

from medmo_rl.schema import Sample


@dataclass(frozen=True)
class Completion:
    sample_id: str
    index: int  # 0..G-1 within its group
    text: str
    token_ids: tuple[int, ...]  # generated tokens only, [T_i]
    logprobs: tuple[float, ...]  # engine (vLLM) logprob of each generated token, [T_i]
    finish_reason: str  # "stop" | "length" | "error"
    weight_version: int  # version of the policy weights that generated it
    error: str | None = None  # per-request failure (prompt too long, corrupt image, ...)


@dataclass(frozen=True)
class Group:
    """The G completions of one prompt, kept together (GRPO normalises within a group)."""

    sample: Sample
    prompt_token_ids: tuple[int, ...]  # as the engine tokenised the prompt (image pads expanded)
    completions: tuple[Completion, ...]
    error: str | None = None  # the whole request failed; completions is then empty
    prompt_too_long: bool = False  # refused before generation: longer than SamplingSpec.max_prompt_tokens


@dataclass(frozen=True)
class SamplingSpec:
    n: int = 8  # G
    max_tokens: int = 1024
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    max_prompt_tokens: int | None = None  # longer prompts (image pads expanded) are refused, not generated


@dataclass(frozen=True)
class TrainItem:
    """One completion ready for the learner: tokens, its advantage, and what the engine said."""

    sample: Sample  # for the image(s) only: the prompt is already tokenised
    prompt_token_ids: tuple[int, ...]  # [P] engine's prompt ids (image pads expanded)
    completion_token_ids: tuple[int, ...]  # [T]
    engine_logprobs: tuple[float, ...]  # [T] vLLM logprobs (behaviour policy as the engine saw it)
    advantage: float  # group-normalised, 0 for failed scoring
    loss_mask: bool = True  # False drops every token (e.g. truncated completions when masked)
    staleness: int = 0  # learner version − the version that generated it (> 0 only when rl.max_staleness ≥ 1)
