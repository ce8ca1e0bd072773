"""The SFT objective (paper eq. 1) — a pure function, no I/O.

    L_SFT = − Σ_i log p_θ(y_i | v, x, y_<i)      over answer tokens (+ <|im_end|>) only

summed over the tokens of one optimizer step and divided by `denom` (the caller passes the step's
answer-token count, so a step's loss is a per-token mean however its tokens are split over
micro-batches and workers). Also returns the quantities the paper plots (App. B, Figs. 7–15):
mean token accuracy and output entropy, averaged over the same tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from medmo_rl.algos import token_logprobs

IGNORE = -100  # label of a token that carries no loss (system, user, image, padding)


@dataclass(frozen=True)
class TokenStats:
    """Detached sums over the answer tokens of one micro-batch; the caller reduces and divides."""

    loss_sum: torch.Tensor  # Σ −log p(y_i), scalar
    correct: torch.Tensor  # Σ [argmax p == y_i], scalar
    entropy_sum: torch.Tensor  # Σ H(p(· | y_<i)) in nats, scalar
    tokens: torch.Tensor  # number of answer tokens, scalar


def sft_token_loss(logits: torch.Tensor, labels: torch.Tensor, denom: float) -> tuple[torch.Tensor, TokenStats]:
    """Summed next-token NLL over positions whose label is not IGNORE, divided by `denom`.

    Args:
        logits: [B, T, V] — logits[b, t] predicts labels[b, t] (already shifted by the caller).
        labels: [B, T] token ids, IGNORE where no loss is taken.
        denom: the number the summed loss is divided by (> 0).
    """
    mask = labels != IGNORE
    picked = logits[mask]  # [N, V]
    target = labels[mask]  # [N]
    logprobs, entropy = token_logprobs(picked, target, with_entropy=True)
    nll = -logprobs
    loss = nll.sum() / denom
    with torch.no_grad():
        stats = TokenStats(
            loss_sum=nll.detach().sum(),
            correct=(picked.argmax(-1) == target).sum().float(),
            entropy_sum=entropy.sum(),
            tokens=mask.sum().float(),
        )
    return loss, stats
