"""GRPO/DAPO math (paper Sec. 3.5, eqs. 3–6; DAPO, Yu et al. 2025), plus the token log-probs and
right-padding the SFT loss and collator share with it. Pure tensors in, tensors out.

No config objects, no logging, no `.item()`: the caller reduces and logs the returned stats.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

LOG_RATIO_CLAMP = 20.0  # exp(±20) keeps ratios finite for wildly off-policy tokens


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6, *, scale: bool = True) -> torch.Tensor:
    """Group-normalised advantages, paper eq. 5.

        A_i = (R_i − mean_g(R)) / (std_g(R) + eps),   std unbiased (÷ (n−1)) over the group
        A_i =  R_i − mean_g(R)                         with scale=False (Dr. GRPO, Liu et al. 2025)

    Why scale=False exists: ÷ std blows a group whose rewards differ by 1e-4 (boxes equal but for
    sub-pixel digits) up to the same ±1 as a group with a real miss; without it a group weighs in
    proportion to how much its completions really differ.

    Args:
        rewards: [B, G] total reward per completion; NaN marks a completion whose scoring failed.
    Returns:
        [B, G] advantages. NaN rewards get advantage 0 and are left out of their group's mean and
        std; a group with fewer than 2 finite rewards, or zero spread, gets all-zero advantages.

    Anchor: [1, 0, 0, 0, 0, 0, 0, 0] → mean 0.125, std 0.353553 → 2.474867 and −0.353552
    (scale=False: 0.875 and −0.125).
    """
    r = rewards.to(torch.float64)
    ok = torch.isfinite(r)
    n = ok.sum(dim=1, keepdim=True)
    r0 = torch.where(ok, r, torch.zeros_like(r))
    mean = r0.sum(dim=1, keepdim=True) / n.clamp(min=1)
    adv = r - mean
    if scale:
        var = (torch.where(ok, r - mean, torch.zeros_like(r)) ** 2).sum(dim=1, keepdim=True) / (n - 1).clamp(min=1)
        adv = adv / (var.sqrt() + eps)
    adv = torch.where(ok & (n >= 2), adv, torch.zeros_like(adv))
    return adv.to(rewards.dtype if rewards.is_floating_point() else torch.float32)


def zero_std_groups(rewards: torch.Tensor) -> torch.Tensor:
    """[B] bool: groups whose finite rewards are all equal (or < 2 finite) — no GRPO signal (DAPO §3.2)."""
    r = rewards.to(torch.float64)
    ok = torch.isfinite(r)
    hi = torch.where(ok, r, torch.full_like(r, -torch.inf)).amax(dim=1)
    lo = torch.where(ok, r, torch.full_like(r, torch.inf)).amin(dim=1)
    return (ok.sum(dim=1) < 2) | (hi - lo <= 0)


@dataclass(frozen=True)
class LossStats:
    """Detached token sums of a DAPO update (STYLE: the loss returns them, the learner reduces).

    One name per quantity from here to metrics.jsonl: `medmo_rl.learner.LearnStats` carries the
    per-token means of these sums under the same field names. Records add with `+` (over
    micro-batches; `ratio_max` takes the max), so accumulating costs no device sync.
    """

    loss: torch.Tensor  # the batch's share of the loss (already ÷ num_tokens: it only adds up)
    tokens: torch.Tensor  # unmasked tokens
    clip_low: torch.Tensor  # tokens where A < 0 and r < 1 − eps_low (the clip is active)
    clip_high: torch.Tensor  # tokens where A > 0 and r > 1 + eps_high
    ratio: torch.Tensor  # Σ r_t
    ratio_max: torch.Tensor  # max r_t (a max, not a sum; 0 without unmasked tokens)
    kl: torch.Tensor  # Σ per-token KL estimate (0 without a reference)
    entropy: torch.Tensor  # Σ H_t of π_θ in nats (0 unless the caller passed token entropies)
    is_weight: torch.Tensor  # Σ w_t, the behaviour weight (1 on every token without `is_weights`)
    is_truncated: torch.Tensor  # tokens whose behaviour weight hit its cap

    def __add__(self, other: LossStats) -> LossStats:
        return LossStats(self.loss + other.loss, self.tokens + other.tokens, self.clip_low + other.clip_low,
                         self.clip_high + other.clip_high, self.ratio + other.ratio,
                         torch.maximum(self.ratio_max, other.ratio_max), self.kl + other.kl,
                         self.entropy + other.entropy, self.is_weight + other.is_weight,
                         self.is_truncated + other.is_truncated)


def behaviour_weights(prox_logprobs: torch.Tensor, behav_logprobs: torch.Tensor, off_policy: torch.Tensor, *,
                      max_ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoupled PPO's behaviour weight (Hilton et al. 2022; AReaL, Fu et al. 2025), truncated.

        w_t = min(exp(clamp(log π_prox − log π_behav, −20, 20)), max_ratio)   where off_policy
        w_t = 1                                                                elsewhere

    π_behav generated the token (the rollout engine, some versions back when the rollout ran
    ahead of the learner: rl.max_staleness); π_prox is the policy at the start of this update —
    the π_old that eq. 4's clip is taken against. Clipping against π_prox keeps the trust region
    where the learner is, and w_t corrects for the data having come from π_behav; truncating it
    bounds the variance a very stale token could add (truncated importance sampling). Tokens
    generated by the current weights (off_policy False) get exactly 1, not a ratio of two
    numerically different computations of the same policy, so a run with max_staleness 0 trains
    on exactly the loss it always did.

    Args:
        prox_logprobs, behav_logprobs: [B, T] log-probs of the sampled tokens.
        off_policy: [B, T] bool (or [B], broadcast over tokens): the token came from older weights.
    Returns:
        ([B, T] w_t, detached; [B, T] bool: off-policy tokens whose weight was capped).

    Anchor: log π_prox − log π_behav = [log 1.5, log 3, log 0.5], cap 2 → w = [1.5, 2, 0.5], capped [F, T, F].
    """
    off = off_policy[:, None] if off_policy.dim() == 1 else off_policy
    off = off.expand_as(prox_logprobs)
    with torch.no_grad():
        ratio = torch.exp((prox_logprobs - behav_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
        capped = off & (ratio > max_ratio)
        w = torch.where(off, ratio.clamp(max=max_ratio), torch.ones_like(ratio))
    return w, capped


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token estimate of KL(π_θ ‖ π_ref) (Schulman's estimators), eq. 6.

        k1 = log π_θ − log π_ref
        k3 = exp(log π_ref − log π_θ) − (log π_ref − log π_θ) − 1   (≥ 0, unbiased)
    """
    if kind == "k1":
        return logprobs - ref_logprobs
    if kind == "k3":
        d = (ref_logprobs - logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        return torch.exp(d) - d - 1
    raise ValueError(f"kl kind {kind!r}; allowed: 'k1', 'k3'")


def dapo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps_low: float,
    eps_high: float,
    num_tokens: torch.Tensor | float | None = None,
    ref_logprobs: torch.Tensor | None = None,
    kl_type: str = "none",
    kl_coef: float = 0.0,
    entropy: torch.Tensor | None = None,
    is_weights: torch.Tensor | None = None,
    is_truncated: torch.Tensor | None = None,
) -> tuple[torch.Tensor, LossStats]:
    """Clip-higher, token-level DAPO policy loss — paper eq. 3 (negated, to minimise).

        r_t   = exp(clamp(log π_θ − log π_old, −20, 20))                                  (eq. 4)
        ℓ_t   = w_t · max(−A·r_t, −A·clip(r_t, 1 − eps_low, 1 + eps_high)) [+ β·KL_t]
        loss  = Σ_{unmasked t} ℓ_t / num_tokens

    w_t is decoupled PPO's behaviour weight (`behaviour_weights`; then π_old is the proximal
    policy); without `is_weights` the multiplication is skipped, not done with ones, so the
    on-policy loss is bit for bit what it was before asynchronous RL existed.

    Token-level: every token of the global batch weighs the same, so `num_tokens` must be the
    count of unmasked tokens in the WHOLE global batch (all ranks, all micro-batches); summing the
    micro-batch losses of every rank then equals the loss of one big batch. Defaults to mask.sum().

    Args:
        logprobs, old_logprobs: [B, T] log-probabilities of the sampled tokens (current / behaviour).
        advantages: [B] (one per sequence, broadcast over tokens) or [B, T].
        mask: [B, T] 1 for completion tokens that count, 0 for padding / masked completions.
        eps_low, eps_high: clip range of the ratio (paper: 0.15, 0.25).
        ref_logprobs, kl_type ("none" | "k1" | "k3"), kl_coef: optional KL term of eq. 6 (β = 0 default).
        entropy: optional [B, T] per-token entropy of π_θ, only summed into the stats.
        is_weights, is_truncated: optional [B, T] w_t and its "capped" flags (`behaviour_weights`).
    Returns:
        (loss scalar, LossStats of detached sums).
    """
    mask = mask.to(logprobs.dtype)
    adv = advantages[:, None] if advantages.dim() == 1 else advantages
    adv = adv.to(logprobs.dtype)
    log_ratio = (logprobs - old_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    per_token = torch.maximum(unclipped, clipped)
    if is_weights is not None:
        per_token = per_token * is_weights.to(per_token.dtype)
    kl = torch.zeros_like(per_token)
    if kl_type != "none" and kl_coef != 0.0:
        if ref_logprobs is None:
            raise ValueError("kl_type is set but ref_logprobs is None")
        kl = kl_penalty(logprobs, ref_logprobs, kl_type)
        per_token = per_token + kl_coef * kl
    denom = mask.sum() if num_tokens is None else torch.as_tensor(num_tokens, dtype=logprobs.dtype)
    loss = (per_token * mask).sum() / denom.clamp(min=1.0)
    with torch.no_grad():
        m = mask.bool()
        stats = LossStats(
            loss=loss.detach(),
            tokens=mask.sum(),
            clip_low=((ratio < 1.0 - eps_low) & (adv < 0) & m).sum().to(logprobs.dtype),
            clip_high=((ratio > 1.0 + eps_high) & (adv > 0) & m).sum().to(logprobs.dtype),
            ratio=(ratio * mask).sum(),
            # a masked max: ratios are > 0, so 0 stands for "no token" and never wins
            ratio_max=torch.where(m, ratio, torch.zeros_like(ratio)).amax() if m.numel() else ratio.new_zeros(()),
            kl=(kl * mask).sum(),
            entropy=(entropy.to(mask.dtype) * mask).sum() if entropy is not None else mask.new_zeros(()),
            is_weight=(is_weights.to(mask.dtype) * mask).sum() if is_weights is not None else mask.sum(),
            is_truncated=(is_truncated & m).sum().to(mask.dtype) if is_truncated is not None else mask.new_zeros(()),
        )
    return loss, stats


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, *,
                   with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probabilities of `tokens` (and optionally the entropy) from ONE fp32 log-softmax.

        log p_t = z_t[x_t] − logsumexp_v z_t[v]          H_t = −Σ_v p_t[v] · log p_t[v]   (nats)

    Args:
        logits: [..., V] (any float dtype; computed in fp32).
        tokens: [...] token ids, the leading shape of `logits`.
    Returns:
        ([...] log p_t, differentiable; [...] H_t, detached — it is a statistic — or None).
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, tokens[..., None].long())[..., 0]
    if not with_entropy:
        return picked, None
    with torch.no_grad():
        return picked, -(logp.exp() * logp).sum(dim=-1)


def right_pad(rows: Sequence[Sequence[float] | torch.Tensor], fill: float, *, width: int | None = None,
              dtype: torch.dtype = torch.long) -> torch.Tensor:
    """[B, width] with row b's values at [b, :len(row)] and `fill` after them; width defaults to
    the longest row. Every batch of token rows here is right-padded (the SFT collator, the learner)."""
    out = torch.full((len(rows), max((len(r) for r in rows), default=0) if width is None else width), fill,
                     dtype=dtype)
    for b, r in enumerate(rows):
        out[b, : len(r)] = torch.as_tensor(r, dtype=dtype)
    return out
