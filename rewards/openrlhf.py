"""OpenRLHF's remote reward protocol on our rewards: `POST /get_reward` (served by rewards.service).

    {"query": [str], "prompts": [str], "labels": [str]}
      → {"rewards": [float], "scores": [float], "extra_logs": {name: [float]}}

That is what `--reward.remote_url` (older releases: `--remote_rm_url`) sends and reads: OpenRLHF's
SingleTurnAgentExecutor (openrlhf/utils/agent.py) posts query = the decoded prompt + response
tokens with special tokens kept, prompts = the prompt text, labels = the dataset's label column;
it trains on "rewards", filters and logs on "scores" and logs each extra_logs entry.

The response of query i is query[i][len(prompts[i]):]. For a VLM the decoded query holds the
processor's N image pads where the prompt text has one, so when the prompt is not a prefix as it
is, runs of <|image_pad|> / <|video_pad|> are collapsed in both first; failing that, the text
after the last "<|im_start|>assistant" header is the response; failing that the item is unscored.
Chat-template control tokens (`<|...|>`: <|im_end|>, <|endoftext|>, image pads) are then removed;
<think>/<answer>/<box> are plain text to the rewards and stay.

Scored parts: accuracy, bbox and tag_count. OpenRLHF applies DAPO's overlong punishment itself
(`--reward.overlong_buffer_len`), so the overlong part is computed only when the service has a
tokenizer to count the response's tokens (`python -m rewards.serve --tokenizer PATH`); without
one, w_overlong counts as 0 and extra_logs has no "overlong". OpenRLHF has no NaN: an item whose
label is not a valid record (rewards/labels.py) or whose response cannot be found scores 0.0 in
rewards, scores and every part, and is counted in extra_logs["invalid_label"] /
extra_logs["unscored"] (1.0 for that item); the rest of the batch is scored.
"""
from __future__ import annotations

import dataclasses
import logging
import re
import time
from typing import Callable, Sequence

from medmo_rl.config import RewardConfig

from rewards.api import RequestError, RewardRequest, RewardResponse
from rewards.composite import PARTS, ScoreItem, score_items
from rewards.labels import LabelError, ReferenceCache, decode_label

log = logging.getLogger(__name__)

CONTROL_TOKEN = re.compile(r"<\|[A-Za-z0-9_]{1,40}\|>")  # ChatML/Qwen specials; <think> & co. are not
_PAD_RUN = re.compile(r"(<\|(?:image|video)_pad\|>)(?:\1)+")
ASSISTANT_HEADER = "<|im_start|>assistant"
_WARN_EVERY_S = 10.0
_last_warning_s = -_WARN_EVERY_S
TokenCounter = Callable[[Sequence[str]], list[int]]  # raw responses → their lengths in tokens


def response_text(query: str, prompt: str) -> str:
    """The response part of a query, control tokens kept (module docstring); ValueError if not found."""
    if query.startswith(prompt):
        return query[len(prompt):]
    q, p = _PAD_RUN.sub(r"\1", query), _PAD_RUN.sub(r"\1", prompt)
    if q.startswith(p):
        return q[len(p):]
    head = query.rfind(ASSISTANT_HEADER)
    if head >= 0:
        return query[head + len(ASSISTANT_HEADER):].removeprefix("\n")
    raise ValueError("the prompt is not a prefix of the query and the query has no assistant header")


def strip_control_tokens(text: str) -> str:
    """Remove chat-template control tokens: "yes<|im_end|>" → "yes"."""
    return CONTROL_TOKEN.sub("", text)


def get_reward(
    request: RewardRequest,
    config: RewardConfig,
    *,
    references: ReferenceCache,
    count_tokens: TokenCounter | None = None,
) -> RewardResponse:
    """Score an OpenRLHF batch (module docstring). RequestError when the lists differ in length."""
    n = len(request.query)
    for name in ("prompts", "labels"):
        m = len(getattr(request, name))
        if m != n:
            raise RequestError(name, f"{m} {name} for {n} queries; the lists must have equal length")
    parts = PARTS if count_tokens is not None else tuple(p for p in PARTS if p != "overlong")
    cfg = config if count_tokens is not None else dataclasses.replace(config, w_overlong=0.0)

    raw: list[str] = []
    refs = []
    todo: list[int] = []
    invalid = [0.0] * n
    unscored = [0.0] * n
    first_error = None
    for i, (query, prompt, label) in enumerate(zip(request.query, request.prompts, request.labels)):
        try:
            refs.append(references.get(label, decode_label))
        except LabelError as exc:
            invalid[i] = unscored[i] = 1.0
            first_error = first_error or f"item {i}: {exc}"
            continue
        try:
            raw.append(response_text(query, prompt))
        except ValueError as exc:
            refs.pop()
            unscored[i] = 1.0
            first_error = first_error or f"item {i}: {exc}"
            continue
        todo.append(i)

    lengths = count_tokens(raw) if count_tokens is not None else [0] * len(raw)
    items = [ScoreItem(strip_control_tokens(r), k, ref) for r, k, ref in zip(raw, lengths, refs)]
    totals = [0.0] * n
    values = {p: [0.0] * n for p in parts}
    for i, result in zip(todo, score_items(items, cfg)):
        if result.error is not None:
            unscored[i] = 1.0
            first_error = first_error or f"item {i}: {result.error}"
            continue
        totals[i] = result.total
        for p in parts:
            values[p][i] = result.parts[p]
    global _last_warning_s
    if first_error is not None and time.monotonic() - _last_warning_s > _WARN_EVERY_S:
        _last_warning_s = time.monotonic()  # /metrics counts every one; the log shows an example
        log.warning("/get_reward: %d of %d items scored 0.0; first: %s", int(sum(unscored)), n, first_error[:300])
    return RewardResponse(rewards=totals, scores=list(totals),
                          extra_logs={**values, "invalid_label": invalid, "unscored": unscored})


def load_token_counter(path: str) -> TokenCounter:
    """A token counter from a HF tokenizer: a tokenizer.json file or a folder holding one.

    Uses the `tokenizers` library directly (no transformers/torch in the service). The response is
    counted as generated, control tokens (e.g. the closing <|im_end|>) included.
    """
    from pathlib import Path

    from tokenizers import Tokenizer

    file = Path(path)
    if file.is_dir():
        file = file / "tokenizer.json"
    if not file.is_file():
        raise FileNotFoundError(f"--tokenizer {path}: no tokenizer.json there")
    tokenizer = Tokenizer.from_file(str(file))

    def count(texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    return count
