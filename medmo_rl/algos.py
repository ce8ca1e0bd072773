"""GRPO/DAPO math (paper Sec. 3.5, eqs. 3–6; DAPO, Yu et al. 2025). Pure tensors in, tensors out.

No config objects, no logging, no `.item()`: the caller reduces and logs the returned stats.
"""
from __future__ import annotations

from dataclasses import dataclass

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
    """Detached per-batch statistics (sums over unmasked tokens, so the caller can all-reduce)."""

    tokens: torch.Tensor  # number of unmasked tokens in this micro-batch
    clip_low_tokens: torch.Tensor  # tokens where A < 0 and r < 1 − eps_low (the clip is active)
    clip_high_tokens: torch.Tensor  # tokens where A > 0 and r > 1 + eps_high
    ratio_sum: torch.Tensor
    ratio_max: torch.Tensor
    kl_sum: torch.Tensor  # Σ per-token KL estimate (0 without a reference)


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
) -> tuple[torch.Tensor, LossStats]:
    """Clip-higher, token-level DAPO policy loss — paper eq. 3 (negated, to minimise).

        r_t   = exp(clamp(log π_θ − log π_old, −20, 20))                                  (eq. 4)
        ℓ_t   = max(−A·r_t, −A·clip(r_t, 1 − eps_low, 1 + eps_high)) [+ β·KL_t]
        loss  = Σ_{unmasked t} ℓ_t / num_tokens

    Token-level: every token of the global batch weighs the same, so `num_tokens` must be the
    count of unmasked tokens in the WHOLE global batch (all ranks, all micro-batches); summing the
    micro-batch losses of every rank then equals the loss of one big batch. Defaults to mask.sum().

    Args:
        logprobs, old_logprobs: [B, T] log-probabilities of the sampled tokens (current / behaviour).
        advantages: [B] (one per sequence, broadcast over tokens) or [B, T].
        mask: [B, T] 1 for completion tokens that count, 0 for padding / masked completions.
        eps_low, eps_high: clip range of the ratio (paper: 0.15, 0.25).
        ref_logprobs, kl_type ("none" | "k1" | "k3"), kl_coef: optional KL term of eq. 6 (β = 0 default).
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
            tokens=mask.sum().detach(),
            clip_low_tokens=((ratio < 1.0 - eps_low) & (adv < 0) & m).sum().to(logprobs.dtype),
            clip_high_tokens=((ratio > 1.0 + eps_high) & (adv > 0) & m).sum().to(logprobs.dtype),
            ratio_sum=(ratio * mask).sum().detach(),
            ratio_max=torch.where(m, ratio, torch.zeros_like(ratio)).amax().detach() if m.any() else ratio.new_zeros(()),
            kl_sum=(kl * mask).sum().detach(),
        )
    return loss, stats


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """[..., V] logits → [...] entropy H = −Σ p log p (nats)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)
