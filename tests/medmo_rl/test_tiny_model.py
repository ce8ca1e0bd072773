"""The offline tiny Qwen3-VL: deterministic, loads in transformers AND vLLM, and the two agree."""
import hashlib
import json
import time

import pytest
import torch

from medmo_rl import prompts
from medmo_rl.schema import load_samples
from medmo_rl.tiny_model import build, resolve_model


def _digest(d):
    return hashlib.sha256((d / "model.safetensors").read_bytes() + (d / "tokenizer.json").read_bytes()).hexdigest()


def test_build_is_deterministic_fast_and_offline(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    out = build(tmp_path / "again", seed=0)
    assert time.perf_counter() - t0 < 30
    assert _digest(out) == _digest(tiny_model_dir)
    assert _digest(build(tmp_path / "other", seed=1)) != _digest(out)
    meta = json.loads((out / "MEDMO_TINY.json").read_text())
    assert 500_000 < meta["params"] < 1_500_000


def test_tokenizer_has_qwen_specials_and_digit_split(tiny_model_dir):
    from transformers import AutoProcessor

    tok = AutoProcessor.from_pretrained(tiny_model_dir).tokenizer
    for t in ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>"):
        assert tok.convert_tokens_to_ids(t) != tok.unk_token_id
    ids = tok("123").input_ids
    assert [tok.decode([i]) for i in ids] == ["1", "2", "3"]
    assert tok.decode(tok("<answer>\nnodule <box>[[1, 2, 3, 4]]</box>\n</answer>").input_ids) == \
        "<answer>\nnodule <box>[[1, 2, 3, 4]]</box>\n</answer>"


def test_resolve_model_accepts_a_checkpoint_dir_and_rejects_others(tiny_model_dir, tmp_path):
    assert resolve_model(str(tiny_model_dir), tmp_path) == tiny_model_dir
    with pytest.raises(FileNotFoundError, match="config.json"):
        resolve_model(str(tmp_path), tmp_path)


def _hf_logprobs(model, processor, text, image, gen_ids):
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    n_prompt = inputs["input_ids"].shape[1]
    ids = torch.cat([inputs["input_ids"], torch.tensor([gen_ids])], dim=1)
    extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
    if "mm_token_type_ids" in inputs:
        extra["mm_token_type_ids"] = torch.cat(
            [inputs["mm_token_type_ids"], torch.zeros(1, len(gen_ids), dtype=inputs["mm_token_type_ids"].dtype)], 1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), **extra).logits[0].float()
    lp = torch.log_softmax(logits[n_prompt - 1 : -1], dim=-1)
    return lp.gather(1, torch.tensor(gen_ids)[:, None])[:, 0].tolist(), n_prompt


@pytest.mark.integration
def test_transformers_and_vllm_generate_and_agree_on_logprobs(tiny_model_dir, synthetic_dir):
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration
    from vllm import LLM, SamplingParams

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    sample = load_samples(synthetic_dir["grounding"]).samples[0]
    text = prompts.render_prompt(processor, sample)
    image = prompts.load_image(sample.images[0], 64 * 64)

    hf_inputs = processor(text=[text], images=[image], return_tensors="pt")
    hf_out = model.generate(**hf_inputs, max_new_tokens=8, do_sample=False)
    assert hf_out.shape[1] == hf_inputs["input_ids"].shape[1] + 8  # a random model never stops early

    llm = LLM(model=str(tiny_model_dir), dtype="float32", max_model_len=512, limit_mm_per_prompt={"image": 1},
              enforce_eager=True, seed=0)
    try:
        req = {"prompt": text, "multi_modal_data": {"image": image}}
        out = llm.generate([req], SamplingParams(n=1, max_tokens=16, temperature=1.0, logprobs=0, seed=3),
                           use_tqdm=False)[0]
        comp = out.outputs[0]
        assert len(comp.token_ids) == 16 and comp.text
        vllm_lp = [lp[t].logprob for lp, t in zip(comp.logprobs, comp.token_ids)]
        hf_lp, n_prompt = _hf_logprobs(model, processor, text, image, list(comp.token_ids))
        assert list(out.prompt_token_ids) == hf_inputs["input_ids"][0].tolist()  # same prompt, image pads included
        diff = max(abs(a - b) for a, b in zip(vllm_lp, hf_lp))
        assert diff < 1e-4, f"vLLM vs transformers logprobs differ by {diff}"
        greedy = llm.generate([req], SamplingParams(max_tokens=8, temperature=0.0), use_tqdm=False)[0].outputs[0]
        assert list(greedy.token_ids) == hf_out[0, n_prompt:].tolist()
    finally:
        del llm
