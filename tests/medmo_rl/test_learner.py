"""The learner on the tiny model: real transformers forward/backward, no fakes."""
import dataclasses
import math

import pytest
import torch

from medmo_rl import prompts
from medmo_rl.config import RLConfig
from medmo_rl.learner import Learner
from medmo_rl.driver.learner_group import shard_batch
from medmo_rl.records import TrainItem
from medmo_rl.schema import load_samples


def _items(model_dir, synthetic_dir, n=4):
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(model_dir)
    samples = load_samples(synthetic_dir["grounding"]).samples[:n]
    out = []
    for i, s in enumerate(samples):
        text = prompts.render_prompt(proc, s)
        ids = proc(text=[text], images=[prompts.load_image(s.images[0], 4096)], return_tensors="pt")["input_ids"][0]
        comp = proc.tokenizer(s.answer + "<|im_end|>").input_ids
        out.append(TrainItem(sample=s, prompt_token_ids=tuple(ids.tolist()), completion_token_ids=tuple(comp),
                             engine_logprobs=tuple([0.0] * len(comp)), advantage=1.0 if i % 2 == 0 else -1.0))
    return out


def test_shard_batch_pads_to_equal_micro_batches():
    it = TrainItem(sample=None, prompt_token_ids=(1,), completion_token_ids=(1, 2, 3), engine_logprobs=(0, 0, 0), advantage=1.0)
    items = [it] * 5
    shards, tokens = shard_batch(items, mini_batches=1, world_size=2, micro_batch=2)
    assert tokens == [15]
    assert [len(s[0]) for s in shards] == [3, 3]  # 3 + 2 → both ranks 2 micro-batches; one masked filler
    assert sum(not x.loss_mask for s in shards for x in s[0]) == 1


def test_train_step_moves_logprobs_in_the_advantage_direction(tiny_model_dir, synthetic_dir):
    rl = RLConfig(lr=1e-2, warmup_ratio=0.0, batch_size=2, grad_accum=2, lr_scheduler="constant", num_learners=1)
    learner = Learner(str(tiny_model_dir), rl, total_steps=10, max_pixels=4096)
    items = _items(tiny_model_dir, synthetic_dir)
    before = learner.logprobs(items)
    items = [dataclasses.replace(it, engine_logprobs=tuple(lp)) for it, lp in zip(items, before)]
    n_tokens = sum(len(it.completion_token_ids) for it in items)
    stats = learner.train_step([items], [n_tokens])
    after = learner.logprobs(items)
    assert stats["engine_mismatch_max"] < 1e-4  # the learner's own logprobs as "engine" logprobs
    assert stats["tokens"] == n_tokens and stats["loss"] != 0.0
    assert stats["ratio_max"] == pytest.approx(1.0, abs=1e-5)  # first update is on-policy
    mean = lambda x: sum(x) / len(x)
    for it, b, a in zip(items, before, after):
        assert (mean(a) - mean(b)) * it.advantage > 0, "logprob moved against the advantage"


def test_save_load_round_trip(tiny_model_dir, synthetic_dir, tmp_path):
    rl = RLConfig(lr=1e-2, warmup_ratio=0.0, batch_size=4, grad_accum=1, num_learners=1)
    a = Learner(str(tiny_model_dir), rl, total_steps=10, max_pixels=4096)
    items = _items(tiny_model_dir, synthetic_dir, 2)
    a.train_step([items], [sum(len(i.completion_token_ids) for i in items)])
    a.save(str(tmp_path / "ck"))
    b = Learner(str(tiny_model_dir), rl, total_steps=10, max_pixels=4096)
    b.load(str(tmp_path / "ck"))
    assert a.logprobs(items) == b.logprobs(items)
    assert b.scheduler.last_epoch == a.scheduler.last_epoch == 1
    wa, wb = a.weights(), b.weights()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_freeze_vision_updates_the_language_model_only(tiny_model_dir, synthetic_dir):
    rl = RLConfig(lr=1e-2, warmup_ratio=0.0, batch_size=4, grad_accum=1, num_learners=1, freeze_vision=True)
    learner = Learner(str(tiny_model_dir), rl, total_steps=10, max_pixels=4096)
    before = learner.weights()
    items = _items(tiny_model_dir, synthetic_dir)
    learner.train_step([items], [sum(len(i.completion_token_ids) for i in items)])
    after = learner.weights()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    vision = {k for k in before if ".visual." in k or k.startswith("visual.")}
    assert vision and not changed & vision, f"vision weights moved: {sorted(changed & vision)[:3]}"
    assert any("language_model" in k for k in changed), "the language model did not train"


def test_bf16_learner_trains(tiny_model_dir, synthetic_dir):
    """rl.bf16 on a single CPU rank (the dtype path; FSDP2's mixed precision needs GPUs)."""
    rl = RLConfig(lr=1e-2, warmup_ratio=0.0, batch_size=4, grad_accum=1, lr_scheduler="constant", num_learners=1,
                  bf16=True)
    learner = Learner(str(tiny_model_dir), rl, total_steps=10, max_pixels=4096)
    assert next(learner.model.parameters()).dtype == torch.bfloat16
    items = _items(tiny_model_dir, synthetic_dir)
    before = learner.logprobs(items)
    stats = learner.train_step([items], [sum(len(i.completion_token_ids) for i in items)])
    after = learner.logprobs(items)
    assert math.isfinite(stats["loss"]) and stats["loss"] != 0.0
    mean = lambda x: sum(x) / len(x)
    moved = [(mean(a) - mean(b)) * it.advantage for it, b, a in zip(items, before, after)]
    assert all(m > 0 for m in moved), f"bf16 update moved logprobs against the advantage: {moved}"
