"""The weight-sync probe (medmo_rl/probe.py) and the weight buckets (medmo_rl/weights.py) — no engine needed."""
from __future__ import annotations

import math

import torch

from medmo_rl.weights import weight_buckets
from medmo_rl.probe import hf_probe_logprobs, make_probe, max_abs_diff
from rollout.worker import request_seed


def test_probe_is_fixed_and_holds_an_image(processor):
    a, b = make_probe(processor), make_probe(processor)
    assert a.token_ids == b.token_ids and a.text == b.text
    assert a.image.tobytes() == b.image.tobytes() and a.image.size == (64, 64)
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert a.token_ids.count(pad) == 4  # 64x64 px / (16 px patch · 2 merge)² = 4 image tokens
    assert a.text.endswith("<|im_end|>") and "<|im_start|>assistant" in a.text


def test_hf_probe_logprobs_match_a_slow_per_position_loop(processor, make_learner):
    model, probe = make_learner(0), make_probe(processor)
    fast = hf_probe_logprobs(model, processor, probe)
    assert len(fast) == len(probe.token_ids) - 1 and all(lp <= 0 for lp in fast)
    inputs = processor(text=[probe.text], images=[probe.image], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0]
    for t in (0, 5, len(fast) - 1):  # log p(x_{t+1} | x_≤t) = logit - logsumexp(logits)
        row = logits[t].double()
        slow = (row[probe.token_ids[t + 1]] - torch.logsumexp(row, 0)).item()
        assert math.isclose(fast[t], slow, abs_tol=1e-5)
    other = hf_probe_logprobs(make_learner(3), processor, probe)
    assert max_abs_diff(fast, other) > 1e-2  # different weights → visibly different probe


def test_max_abs_diff():
    assert max_abs_diff([-1.0, -2.0], [-1.0, -2.5]) == 0.5
    assert max_abs_diff([-1.0], [-1.0, -2.0]) == float("inf")
    assert max_abs_diff([], []) == 0.0


def test_weight_buckets_keep_order_and_size():
    w = {f"p{i}": torch.zeros(256) for i in range(5)}  # 1 KiB each (fp32)
    buckets = weight_buckets(w, bucket_bytes=2048)
    assert [[n for n, _ in b] for b in buckets] == [["p0", "p1"], ["p2", "p3"], ["p4"]]
    assert [[n for n, _ in b] for b in weight_buckets(list(w.items()), 10)] == [[n] for n in w]
    assert weight_buckets({}, 10) == []


def test_request_seed_depends_on_sample_not_worker():
    assert request_seed(1, "a") == request_seed(1, "a")
    assert request_seed(1, "a") != request_seed(1, "b") != request_seed(2, "b")
    assert 0 <= request_seed(10**9, "x") < 2**31 - 2**16
