"""sft/loss.py: the SFT loss and its plotted statistics, against hand arithmetic."""
from __future__ import annotations

import math

import pytest
import torch

from sft.loss import IGNORE, sft_token_loss


def test_loss_accuracy_entropy_by_hand():
    # one row, 3 positions, vocab 2; the middle position is masked and must not count
    logits = torch.tensor([[[1.0, 0.0], [50.0, -50.0], [math.log(3.0), 0.0]]], requires_grad=True)
    labels = torch.tensor([[0, IGNORE, 1]])
    loss, stats = sft_token_loss(logits, labels, denom=2.0)
    # pos 0: p(0) = e/(e+1)   → nll = ln(1 + e^-1) = 0.31326, argmax 0 == 0 ✓
    # pos 2: p(1) = 1/(3+1)   → nll = ln 4        = 1.38629, argmax 0 != 1 ✗
    nll0, nll2 = math.log(1 + math.exp(-1)), math.log(4)
    assert loss.item() == pytest.approx((nll0 + nll2) / 2, rel=1e-6)
    assert stats.loss_sum.item() == pytest.approx(nll0 + nll2, rel=1e-6)
    assert stats.correct.item() == 1 and stats.tokens.item() == 2
    p0 = math.e / (math.e + 1)
    h0 = -(p0 * math.log(p0) + (1 - p0) * math.log(1 - p0))  # 0.58220
    h2 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))  # 0.56234
    assert stats.entropy_sum.item() == pytest.approx(h0 + h2, rel=1e-5)
    loss.backward()
    assert torch.all(logits.grad[0, 1] == 0)  # no gradient through a masked position
    # d(nll)/d(logit) = p − onehot, divided by denom
    assert logits.grad[0, 2].tolist() == pytest.approx([0.75 / 2, -0.75 / 2], rel=1e-5)


def test_step_loss_is_a_token_mean_however_tokens_are_split():
    torch.manual_seed(0)
    logits = torch.randn(4, 6, 11)
    labels = torch.randint(0, 11, (4, 6))
    labels[0, :3] = IGNORE
    labels[3, :] = IGNORE
    n = int((labels != IGNORE).sum())
    whole, _ = sft_token_loss(logits, labels, denom=n)
    parts = sum(sft_token_loss(logits[i:i + 1], labels[i:i + 1], denom=n)[0] for i in range(4))
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, 11), labels.reshape(-1), ignore_index=IGNORE)
    assert whole.item() == pytest.approx(ref.item(), rel=1e-6)
    assert parts.item() == pytest.approx(ref.item(), rel=1e-6)


def test_no_targets_gives_zero_loss_that_still_backpropagates():
    logits = torch.randn(1, 3, 5, requires_grad=True)
    loss, stats = sft_token_loss(logits, torch.full((1, 3), IGNORE), denom=1.0)
    loss.backward()
    assert loss.item() == 0 and stats.tokens.item() == 0 and torch.all(logits.grad == 0)
