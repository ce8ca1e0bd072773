"""The learner on the tiny model: real transformers forward/backward, no fakes."""
import dataclasses
import math

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from medmo_rl import prompts
from medmo_rl.checkpoint import TRAIN_STATE
from medmo_rl.config import RLConfig
from medmo_rl.learner import Learner, LearnStats, learn_stats
from medmo_rl.driver.learner_group import LearnerGroup, shard_batch
from medmo_rl.records import TrainItem
from medmo_rl.schema import load_samples


def _items(model_dir, synthetic_dir, n=4, samples=None):
    proc = AutoProcessor.from_pretrained(model_dir)
    samples = samples or load_samples(synthetic_dir["grounding"]).samples[:n]
    out = []
    for i, s in enumerate(samples):
        text = prompts.render_prompt(proc, s)
        images = [prompts.load_image(p, 4096) for p in s.images] or None
        ids = proc(text=[text], images=images, return_tensors="pt")["input_ids"][0]
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
    assert stats.engine_logprob_mismatch_max < 1e-4  # the learner's own logprobs as "engine" logprobs
    assert stats.tokens == n_tokens and stats.loss != 0.0
    assert stats.ratio_max == pytest.approx(1.0, abs=1e-5)  # first update is on-policy
    assert stats.ratio == pytest.approx(1.0, abs=1e-5) and stats.clip_low == stats.clip_high == 0.0
    assert 0.0 < stats.entropy < math.log(learner.model.config.text_config.vocab_size)
    # one step on the token-level loss −(1/N) Σ_i A_i Σ_t ratio_it raises its objective Σ_i A_i Σ_t log π_it.
    # (Per item this need not hold: the multi-lesion answers share most tokens, so an item with A < 0
    # can gain where it shares tokens with items of A > 0.)
    gain = sum(it.advantage * (sum(a) - sum(b)) for it, b, a in zip(items, before, after))
    assert gain > 0, f"the advantage-weighted log-likelihood fell by {-gain:.4f}"
    assert {it.advantage for it in items} == {1.0, -1.0}  # both signs are in the batch


def test_stale_items_are_weighted_by_the_truncated_behaviour_ratio(tiny_model_dir, synthetic_dir):
    """Items the rollout generated k versions back: the engine's log-probs are the behaviour policy.
    Behaviour log-probs log(1.5) below the learner's → w_t = 1.5 on every token, so the first
    (on-policy w.r.t. π_prox, r_t = 1) update's loss is 1.5 × the same items' fresh loss;
    log(3) below with the cap 2 → w_t = 2, every token truncated. Fresh items: w_t exactly 1."""
    rl = RLConfig(lr=1e-2, warmup_ratio=0.0, batch_size=2, grad_accum=2, lr_scheduler="constant", num_learners=1,
                  max_is_ratio=2.0)
    items = _items(tiny_model_dir, synthetic_dir)
    prox = Learner(str(tiny_model_dir), rl, total_steps=10, max_pixels=4096).logprobs(items)
    n_tokens = sum(len(it.completion_token_ids) for it in items)

    def step(shift: float, staleness: int) -> LearnStats:
        batch = [dataclasses.replace(it, engine_logprobs=tuple(x - shift for x in lp), staleness=staleness)
                 for it, lp in zip(items, prox)]
        return Learner(str(tiny_model_dir), rl, total_steps=10, max_pixels=4096).train_step([batch], [n_tokens])

    fresh, stale, capped = step(0.0, 0), step(math.log(1.5), 1), step(math.log(3.0), 2)
    assert fresh.is_weight_mean == 1.0 and fresh.is_truncated_frac == 0.0
    assert stale.is_weight_mean == pytest.approx(1.5, rel=1e-4) and stale.is_truncated_frac == 0.0
    assert stale.loss == pytest.approx(1.5 * fresh.loss, rel=1e-4) and fresh.loss != 0.0
    assert capped.is_weight_mean == pytest.approx(2.0) and capped.is_truncated_frac == 1.0
    assert capped.loss == pytest.approx(2.0 * fresh.loss, rel=1e-4)
    # the engine-vs-learner gap is a bug detector for on-policy tokens; stale ones differ by design
    assert stale.engine_logprob_mismatch == 0.0 and fresh.engine_logprob_mismatch < 1e-4


def test_save_load_round_trip(tiny_model_dir, synthetic_dir, tmp_path):
    rl = RLConfig(lr=1e-2, warmup_ratio=0.0, batch_size=4, grad_accum=1, num_learners=1)
    a = Learner(str(tiny_model_dir), rl, total_steps=10, max_pixels=4096)
    items = _items(tiny_model_dir, synthetic_dir, 2)
    a.train_step([items], [sum(len(i.completion_token_ids) for i in items)])
    a.save(str(tmp_path / "ck"))
    assert (tmp_path / "ck" / TRAIN_STATE).is_file() and (tmp_path / "ck" / "model.safetensors").is_file()
    b = Learner(str(tiny_model_dir), rl, total_steps=10, max_pixels=4096)
    b.load(str(tmp_path / "ck"))
    assert a.logprobs(items) == b.logprobs(items)
    assert b.scheduler.last_epoch == a.scheduler.last_epoch == 1
    wa, wb = a.weights(), b.weights()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # the optimizer moments came back too: the next update moves both to the same weights
    n = sum(len(i.completion_token_ids) for i in items)
    assert a.train_step([items], [n]) == b.train_step([items], [n])
    assert a.logprobs(items) == b.logprobs(items)


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
    assert math.isfinite(stats.loss) and stats.loss != 0.0
    gain = sum(it.advantage * (sum(a) - sum(b)) for it, b, a in zip(items, before, after))  # as in the fp32 test
    assert gain > 0, f"the bf16 update lowered the advantage-weighted log-likelihood by {-gain:.4f}"


def _mixed_items(tiny_model_dir, synthetic_dir):
    """Prompts of different lengths in one micro-batch, an image shared by three items, a text-only item."""
    g, v, t = (load_samples(synthetic_dir[k]).samples for k in ("grounding", "vqa", "text_qa"))
    return _items(tiny_model_dir, synthetic_dir, samples=[g[0], v[1], g[1], t[0], g[0]])


def test_logprobs_equal_a_whole_sequence_forward_per_item(tiny_model_dir, synthetic_dir):
    """logits_to_keep, the gather into it and the images processed once per step change nothing:
    each row equals log_softmax of a plain forward of that item alone, read off at P−1+t."""
    rl = RLConfig(batch_size=5, grad_accum=1, num_learners=1)
    learner = Learner(str(tiny_model_dir), rl, total_steps=10, max_pixels=4096)
    items = _mixed_items(tiny_model_dir, synthetic_dir)
    assert len({len(it.prompt_token_ids) for it in items}) >= 3
    fast = learner.logprobs(items)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    proc = AutoProcessor.from_pretrained(tiny_model_dir)
    for it, row in zip(items, fast):
        images = [prompts.load_image(p, 4096) for p in it.sample.images] or None
        inputs = proc(text=[prompts.render_prompt(proc, it.sample)], images=images, return_tensors="pt")
        ids = torch.tensor([list(it.prompt_token_ids) + list(it.completion_token_ids)])
        mm = torch.cat([inputs["mm_token_type_ids"], torch.zeros(1, len(it.completion_token_ids), dtype=torch.long)], 1)
        extra = {k: inputs[k] for k in ("pixel_values", "image_grid_thw") if k in inputs}
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=mm, **extra).logits[0]
        P = len(it.prompt_token_ids)
        slow = [(logits[P - 1 + t].double().log_softmax(-1)[tok]).item() for t, tok in enumerate(it.completion_token_ids)]
        assert row == pytest.approx(slow, abs=1e-5)


def test_train_step_processes_each_image_once(tiny_model_dir, synthetic_dir):
    rl = RLConfig(lr=1e-3, warmup_ratio=0.0, batch_size=2, grad_accum=3, num_learners=1)
    learner = Learner(str(tiny_model_dir), rl, total_steps=10, max_pixels=4096)
    items = _mixed_items(tiny_model_dir, synthetic_dir)  # 2 distinct images over 3 micro-batches
    calls = []
    real = learner.processor.image_processor

    class Counting:
        def __call__(self, images, **kw):
            calls.append(len(images))
            return real(images=images, **kw)

    learner.processor.image_processor = Counting()
    stats = learner.train_step([items], [sum(len(i.completion_token_ids) for i in items)])
    assert calls == [2]  # before: once per micro-batch for the old log-probs, and again for the update
    assert stats.tokens == sum(len(i.completion_token_ids) for i in items)


def test_logged_lr_is_the_one_the_step_used_and_decay_skips_norms(tiny_model_dir, synthetic_dir):
    # 4 steps, warm-up 2: the first step runs at lr·(0+1)/2, the scheduler then moves on to lr·2/2
    rl = RLConfig(lr=1e-2, warmup_ratio=0.5, batch_size=4, grad_accum=1, num_learners=1, weight_decay=0.1)
    learner = Learner(str(tiny_model_dir), rl, total_steps=4, max_pixels=4096)
    items = _items(tiny_model_dir, synthetic_dir, 2)
    stats = learner.train_step([items], [sum(len(i.completion_token_ids) for i in items)])
    assert stats.lr == pytest.approx(0.5e-2) and learner.scheduler.get_last_lr()[0] == pytest.approx(1e-2)
    decay, no_decay = learner.optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in learner.model.named_parameters()}
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in no_decay["params"])
    assert any("norm" in names[id(p)] for p in no_decay["params"])


def test_learner_loads_in_model_dtype(tiny_model_dir):
    learner = Learner(str(tiny_model_dir), RLConfig(num_learners=1), total_steps=1, max_pixels=4096, dtype="bfloat16")
    assert {p.dtype for p in learner.model.parameters()} == {torch.bfloat16}


def test_learn_stats_are_per_token_means_over_ranks():
    # packed rows: loss, tokens, clip_low, clip_high, ratio, kl, entropy, gap, gap_tokens, is_weight, is_truncated,
    #              ratio_max, gap_max, grad_norm
    ranks = torch.tensor([[0.25, 6.0, 1.0, 0.0, 6.6, 0.3, 3.0, 0.06, 6.0, 7.0, 1.0, 1.3, 0.02, 0.7],
                          [-0.05, 2.0, 0.0, 1.0, 1.8, 0.1, 1.0, 0.02, 2.0, 2.0, 0.0, 1.1, 0.05, 0.7]], dtype=torch.float64)
    s = learn_stats(ranks, lr=3e-4)
    # 8 tokens in all: clip_low 1/8, clip_high 1/8, ratio 8.4/8, kl 0.4/8, entropy 4/8, |Δ| 0.08/8,
    # behaviour weight 9/8, truncated 1/8
    assert (s.is_weight_mean, s.is_truncated_frac) == pytest.approx((1.125, 0.125))
    assert isinstance(s, LearnStats) and s.loss == pytest.approx(0.2) and s.tokens == 8.0
    assert (s.clip_low, s.clip_high, s.ratio, s.kl, s.entropy) == pytest.approx((0.125, 0.125, 1.05, 0.05, 0.5))
    assert s.engine_logprob_mismatch == pytest.approx(0.01) and s.engine_logprob_mismatch_max == pytest.approx(0.05)
    assert s.ratio_max == pytest.approx(1.3) and s.grad_norm == pytest.approx(0.7) and s.lr == 3e-4


@pytest.mark.integration
def test_two_ddp_ranks_report_what_one_learner_reports(ray_local, tiny_model_dir, synthetic_dir, tmp_path):
    """Real Ray actors, DDP over gloo: the all-gathered stats of 2 ranks equal one rank's over the
    same batch (token-level normalisation), and rank 0 alone can save what both ranks load."""
    rl = RLConfig(lr=1e-2, warmup_ratio=0.0, batch_size=2, grad_accum=2, lr_scheduler="constant", num_learners=2,
                  cpus_per_learner=1.0)
    one = Learner(str(tiny_model_dir), dataclasses.replace(rl, num_learners=1), total_steps=10, max_pixels=4096)
    items = _items(tiny_model_dir, synthetic_dir, 4)
    items = [dataclasses.replace(it, engine_logprobs=tuple(lp)) for it, lp in zip(items, one.logprobs(items))]
    single = one.train_step([items], [sum(len(i.completion_token_ids) for i in items)])
    make = lambda: LearnerGroup(str(tiny_model_dir), rl, total_steps=10, max_pixels=4096, seed=0, dtype="float32")
    group = make()
    try:
        both = group.train_step(items)
        assert both.tokens == single.tokens and both.lr == single.lr
        for name in ("loss", "ratio", "ratio_max", "entropy", "grad_norm"):
            assert getattr(both, name) == pytest.approx(getattr(single, name), rel=1e-4), name
        assert both.engine_logprob_mismatch_max < 1e-4
        group.save(str(tmp_path / "ck"))
    finally:
        group.shutdown()
    resumed = make()
    try:
        resumed.load(str(tmp_path / "ck"))
        # from the reloaded weights and AdamW moments the next steps are the single learner's
        for _ in range(2):  # the second one starts from an update that used the reloaded moments
            again, mine = resumed.train_step(items), one.train_step([items], [int(single.tokens)])
            assert mine.engine_logprob_mismatch > 1e-3  # the weights moved away from the "engine"'s
            for name in ("engine_logprob_mismatch", "entropy", "grad_norm"):
                assert getattr(again, name) == pytest.approx(getattr(mine, name), rel=1e-3), name
    finally:
        resumed.shutdown()


def test_kl_to_the_frozen_reference_is_zero_then_grows(tiny_model_dir, synthetic_dir):
    rl = RLConfig(lr=1e-2, warmup_ratio=0.0, batch_size=4, grad_accum=1, lr_scheduler="constant", num_learners=1,
                  kl_type="k3", kl_coef=0.1)
    learner = Learner(str(tiny_model_dir), rl, total_steps=10, max_pixels=4096)
    items = _items(tiny_model_dir, synthetic_dir)
    n = sum(len(i.completion_token_ids) for i in items)
    first, second = learner.train_step([items], [n]), learner.train_step([items], [n])
    assert first.kl == pytest.approx(0.0, abs=1e-6)  # policy == reference before any update
    assert second.kl > 1e-4  # the policy moved; the reference did not
