import math

import pytest
import torch

from medmo_rl.algos import (LossStats, behaviour_weights, dapo_policy_loss, group_advantages, kl_penalty, right_pad, token_logprobs,
                            zero_std_groups)


def test_group_advantages_anchor():
    a = group_advantages(torch.tensor([[1.0, 0, 0, 0, 0, 0, 0, 0]]))
    # mean 1/8; unbiased var = (7/8)^2 + 7·(1/8)^2 over 7 = 0.125 → std 0.353553
    assert a[0, 0].item() == pytest.approx(2.474867, abs=1e-5)
    assert a[0, 1:].tolist() == pytest.approx([-0.353552] * 7, abs=1e-5)


def test_group_advantages_matches_slow_loop_over_seeds():
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        r = torch.rand(4, 6, generator=g, dtype=torch.float64)
        a = group_advantages(r)
        for b in range(4):
            vals = r[b].tolist()
            mean = sum(vals) / 6
            std = math.sqrt(sum((v - mean) ** 2 for v in vals) / 5)
            for i in range(6):
                assert a[b, i].item() == pytest.approx((vals[i] - mean) / (std + 1e-6), rel=1e-9)


def test_nan_rewards_get_zero_advantage_and_are_excluded():
    r = torch.tensor([[1.0, float("nan"), 0.0, 0.0]])
    a = group_advantages(r)
    # stats over [1, 0, 0]: mean 1/3, unbiased std sqrt(1/3) = 0.57735
    assert a[0, 1].item() == 0.0
    assert a[0, 0].item() == pytest.approx((2 / 3) / (math.sqrt(1 / 3) + 1e-6), rel=1e-6)
    assert torch.equal(group_advantages(torch.tensor([[float("nan"), 1.0]])), torch.zeros(1, 2))


def test_unscaled_advantages_are_reward_minus_group_mean():
    """scale=False (Dr. GRPO): a group that barely differs keeps its tiny advantages."""
    r = torch.tensor([[1.0, 0, 0, 0, 0, 0, 0, 0], [0.5001, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
                      [1.0, float("nan"), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    a = group_advantages(r, scale=False)
    assert a[0, 0].item() == pytest.approx(0.875) and a[0, 1:].tolist() == pytest.approx([-0.125] * 7)
    assert a[1, 0].item() == pytest.approx(0.0001 * 7 / 8, rel=1e-6)
    assert group_advantages(r)[1, 0].item() == pytest.approx(2.474867, rel=0.05)  # ÷ std (3.5e-5 + eps): ±1 scale
    assert a[2, 1].item() == 0.0 and a[2, 0].item() == pytest.approx(1 - 1 / 7)  # NaN left out of the mean


def test_zero_std_groups():
    r = torch.tensor([[0.5, 0.5, 0.5], [0.1, 0.2, 0.1], [float("nan"), 0.3, 0.3], [float("nan"), float("nan"), 1.0]])
    assert zero_std_groups(r).tolist() == [True, False, True, True]
    assert torch.equal(group_advantages(r)[0], torch.zeros(3))


def test_dapo_loss_hand_values():
    # one sequence, 3 tokens, A = +1, eps (0.2, 0.28)
    # ratios exp(log r): 1.0, 1.5, 0.5
    #   t0: max(-1·1.0, -1·1.0) = -1.0
    #   t1: max(-1.5, -1·1.28) = -1.28   (clip-high active)
    #   t2: max(-0.5, -1·0.8)  = -0.5
    lp = torch.log(torch.tensor([[1.0, 1.5, 0.5]]))
    old = torch.zeros(1, 3)
    loss, st = dapo_policy_loss(lp, old, torch.tensor([1.0]), torch.ones(1, 3), eps_low=0.2, eps_high=0.28)
    assert loss.item() == pytest.approx((-1.0 - 1.28 - 0.5) / 3, rel=1e-6)
    assert st.clip_high.item() == 1 and st.clip_low.item() == 0
    assert st.ratio_max.item() == pytest.approx(1.5) and st.ratio.item() == pytest.approx(3.0)
    assert st.loss.item() == pytest.approx(loss.item()) and st.tokens.item() == 3
    # A = −1: t1 max(1.5, 1.28) = 1.5; t2 max(0.5, 0.8) = 0.8 (clip-low active)
    loss, st = dapo_policy_loss(lp, old, torch.tensor([-1.0]), torch.ones(1, 3), eps_low=0.2, eps_high=0.28)
    assert loss.item() == pytest.approx((1.0 + 1.5 + 0.8) / 3, rel=1e-6)
    assert st.clip_low.item() == 1 and st.clip_high.item() == 0


def test_dapo_mask_and_token_advantages():
    lp = torch.tensor([[0.0, 0.0, 5.0]])
    old = torch.zeros(1, 3)
    adv = torch.tensor([[2.0, -1.0, 100.0]])  # the masked token's huge values must not leak in
    entropy = torch.tensor([[0.5, 1.0, 7.0]])
    loss, st = dapo_policy_loss(lp, old, adv, torch.tensor([[1, 1, 0]]), eps_low=0.2, eps_high=0.2, entropy=entropy)
    assert loss.item() == pytest.approx((-2.0 + 1.0) / 2)
    assert st.tokens.item() == 2 and st.ratio_max.item() == pytest.approx(1.0)  # the masked e^5 is not the max
    assert st.entropy.item() == pytest.approx(1.5) and st.kl.item() == 0.0  # 0.5 + 1.0; the masked 7 left out


def test_gradient_matches_clip_rule():
    # inside the clip range the gradient of −A·r w.r.t. logp is −A·r; outside (clip active) it is 0
    lp = torch.log(torch.tensor([[1.0, 1.5]])).requires_grad_(True)
    loss, _ = dapo_policy_loss(lp, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2), eps_low=0.2, eps_high=0.28)
    loss.backward()
    assert lp.grad.tolist()[0] == pytest.approx([-1.0 / 2, 0.0])


def test_global_token_normalisation_two_ranks_two_microbatches_equals_one_batch():
    g = torch.Generator().manual_seed(0)
    B, T = 8, 5
    lp = torch.randn(B, T, generator=g) * 0.1 - 1
    old = lp + torch.randn(B, T, generator=g) * 0.2
    adv = torch.randn(B, generator=g)
    mask = (torch.rand(B, T, generator=g) > 0.3).float()
    mask[:, 0] = 1
    full, _ = dapo_policy_loss(lp, old, adv, mask, eps_low=0.15, eps_high=0.25)
    n_global = mask.sum()
    parts = []
    for rank in range(2):
        for micro in range(2):
            sl = slice(rank * 4 + micro * 2, rank * 4 + micro * 2 + 2)
            loss, _ = dapo_policy_loss(lp[sl], old[sl], adv[sl], mask[sl], eps_low=0.15, eps_high=0.25, num_tokens=n_global)
            parts.append(loss)
    # DDP averages gradients over 2 ranks, so each rank scales its sum by world size; the sum is the same loss
    assert sum(parts).item() == pytest.approx(full.item(), rel=1e-6)


def test_kl_estimators():
    lp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -2.0])
    assert kl_penalty(lp, ref, "k1").tolist() == pytest.approx([0.5, 0.0])
    # k3 with d = ref − lp = −0.5: e^−0.5 + 0.5 − 1 = 0.106531
    assert kl_penalty(lp, ref, "k3").tolist() == pytest.approx([math.exp(-0.5) - 0.5, 0.0], abs=1e-6)
    loss0, _ = dapo_policy_loss(lp[None], lp[None], torch.tensor([0.0]), torch.ones(1, 2), eps_low=0.2, eps_high=0.2,
                                ref_logprobs=ref[None], kl_type="k1", kl_coef=0.1)
    assert loss0.item() == pytest.approx(0.1 * 0.5 / 2)
    with pytest.raises(ValueError, match="ref_logprobs"):
        dapo_policy_loss(lp[None], lp[None], torch.tensor([0.0]), torch.ones(1, 2), eps_low=0.2, eps_high=0.2,
                         kl_type="k3", kl_coef=0.1)


def test_loss_stats_add_sums_and_take_the_max():
    a = LossStats(*map(torch.tensor, (0.5, 3.0, 1.0, 0.0, 3.2, 1.4, 0.1, 2.0, 2.5, 1.0)))
    b = LossStats(*map(torch.tensor, (-0.25, 2.0, 0.0, 1.0, 1.9, 1.1, 0.3, 1.0, 2.0, 0.0)))
    c = a + b
    assert [c.loss.item(), c.tokens.item(), c.clip_low.item(), c.clip_high.item()] == pytest.approx([0.25, 5, 1, 1])
    assert [c.ratio.item(), c.kl.item(), c.entropy.item()] == pytest.approx([5.1, 0.4, 3.0])
    assert [c.is_weight.item(), c.is_truncated.item()] == pytest.approx([4.5, 1.0])
    assert c.ratio_max.item() == pytest.approx(1.4)  # max(1.4, 1.1), not 2.5


def test_behaviour_weights_by_hand():
    # log π_prox − log π_behav = [ln 1.5, ln 3, ln 0.5] → ratios [1.5, 3, 0.5]; cap 2 → [1.5, 2, 0.5]
    behav = torch.tensor([[-1.0, -2.0, -0.5]])
    prox = behav + torch.log(torch.tensor([[1.5, 3.0, 0.5]]))
    w, capped = behaviour_weights(prox, behav, torch.tensor([True]), max_ratio=2.0)
    assert w.tolist()[0] == pytest.approx([1.5, 2.0, 0.5])
    assert capped.tolist() == [[False, True, False]]
    # a token generated by the current weights weighs exactly 1, whatever the two log-probs say
    w, capped = behaviour_weights(prox, behav, torch.tensor([[True, False, True]]), max_ratio=2.0)
    assert w.tolist()[0] == pytest.approx([1.5, 1.0, 0.5]) and w[0, 1].item() == 1.0
    assert capped.tolist() == [[False, False, False]]


def test_decoupled_loss_by_hand():
    """One sequence, A = +1, three tokens; π_θ/π_prox = [1.1, 1.4, 0.9], π_prox/π_behav = [1.5, 3, 0.5], cap 2,
    eps 0.2/0.2:
        clipped surrogate per token  min(r·A, clip(r)·A) = [1.1, 1.2, 0.9]
        weighted by w = [1.5, 2, 0.5]                      = [1.65, 2.4, 0.45]
        loss = −(1.65 + 2.4 + 0.45) / 3 = −1.5"""
    prox = torch.tensor([[-1.0, -1.0, -1.0]])
    lp = prox + torch.log(torch.tensor([[1.1, 1.4, 0.9]]))
    behav = prox - torch.log(torch.tensor([[1.5, 3.0, 0.5]]))
    w, capped = behaviour_weights(prox, behav, torch.tensor([True]), max_ratio=2.0)
    loss, st = dapo_policy_loss(lp, prox, torch.tensor([1.0]), torch.ones(1, 3), eps_low=0.2, eps_high=0.2,
                                is_weights=w, is_truncated=capped)
    assert loss.item() == pytest.approx(-1.5, rel=1e-6)
    assert st.is_weight.item() == pytest.approx(4.0) and st.is_truncated.item() == 1.0
    # the gradient flows through r_t only: w is a constant of the update
    lp = lp.clone().requires_grad_(True)
    dapo_policy_loss(lp, prox, torch.tensor([1.0]), torch.ones(1, 3), eps_low=0.2, eps_high=0.2,
                     is_weights=w)[0].backward()
    # d/dlp of −w·r/3 = −w·r/3 where unclipped (tokens 0, 2); 0 where the high clip is active (token 1)
    assert lp.grad.tolist()[0] == pytest.approx([-1.5 * 1.1 / 3, 0.0, -0.5 * 0.9 / 3], rel=1e-5)


def test_on_policy_weights_leave_the_loss_bit_identical():
    """max_staleness 0: no item is off-policy, the learner passes no weights, and the loss is today's to the bit;
    all-ones weights (what an always-on weighting would pass) give the same number too."""
    g = torch.Generator().manual_seed(0)
    lp, old = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)
    adv, mask = torch.randn(4, generator=g), (torch.rand(4, 7, generator=g) > 0.3).float()
    base, st0 = dapo_policy_loss(lp, old, adv, mask, eps_low=0.15, eps_high=0.25)
    w, capped = behaviour_weights(old, old + 0.3, torch.zeros(4, dtype=torch.bool), max_ratio=2.0)
    ones, st1 = dapo_policy_loss(lp, old, adv, mask, eps_low=0.15, eps_high=0.25, is_weights=w, is_truncated=capped)
    assert torch.equal(base, ones)
    assert st0.is_weight.item() == st0.tokens.item() == st1.is_weight.item() and st1.is_truncated.item() == 0


def test_token_logprobs_and_entropy_by_hand():
    # row 0: z = [0, 0, ln 2] → p = [1/4, 1/4, 1/2]; token 2: ln 1/2 = −0.693147
    #        H = 2·(1/4)·ln 4 + (1/2)·ln 2 = 1.039721
    # row 1: z = [ln 3, 0, 0] → p = [3/5, 1/5, 1/5]; token 1: ln 1/5 = −1.609438
    #        H = (3/5)·ln(5/3) + (2/5)·ln 5 = 0.950271
    logits = torch.tensor([[0.0, 0.0, math.log(2)], [math.log(3), 0.0, 0.0]], requires_grad=True)
    tokens = torch.tensor([2, 1])
    lp, ent = token_logprobs(logits, tokens, with_entropy=True)
    assert lp.tolist() == pytest.approx([-0.693147, -1.609438], abs=1e-6)
    assert ent.tolist() == pytest.approx([1.039721, 0.950271], abs=1e-6) and not ent.requires_grad
    lp.sum().backward()  # d log p_x / dz = onehot(x) − p
    assert logits.grad.tolist() == [pytest.approx([-0.25, -0.25, 0.5]), pytest.approx([-0.6, 0.8, -0.2])]
    shifted, none = token_logprobs(logits.detach() + 100.0, tokens)  # a shift of every logit changes nothing
    assert none is None and shifted.tolist() == pytest.approx([-0.693147, -1.609438], abs=1e-5)
    half, _ = token_logprobs(logits.detach().bfloat16(), tokens)
    assert half.dtype == torch.float32 and half.tolist() == pytest.approx([-0.693147, -1.609438], abs=1e-2)


def test_right_pad():
    assert right_pad([[1, 2], [3], []], 9).tolist() == [[1, 2], [3, 9], [9, 9]]
    padded = right_pad([torch.tensor([0.5]), (1.5, 2.5)], -1.0, width=3, dtype=torch.float32)
    assert padded.dtype == torch.float32 and padded.tolist() == [[0.5, -1.0, -1.0], [1.5, 2.5, -1.0]]
    assert right_pad([], 0).shape == (0, 0)
