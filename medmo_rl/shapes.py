"""Shape-true Qwen3-VL models: the exact widths of Qwen3-VL-2B-Instruct / -8B-Instruct, cut to
2 text layers and 2 vision blocks, random bf16 weights, Qwen3's real tokenizer.

    python -m medmo_rl.shapes OUT_DIR --shape 2b|8b [--seed 0]      # build (~1 GB / ~3.4 GB bf16)
    python -m medmo_rl.shapes --shape 8b --print-config             # the config and parameter counts

Every width, head count, vocabulary and rope value below is the released checkpoint's config.json,
read (no network here) from copies of it in public code:
  2B  xzhan34/openvino.genai  src/cpp/src/modeling/tests/qwen3_vl_spec_test.cpp (commit 4b58213),
      a verbatim config.json of Qwen3-VL-2B-Instruct in a config-parsing test;
  8B  NVIDIA/TensorRT-LLM  tests/unittest/_torch/modeling/test_modeling_qwen3vl.py (commit 0493881),
      QWEN3_VL_8B_CONFIG, the 8B config.json with num_hidden_layers cut to 4 ("36 layers for full model").
Token ids (151643 <|endoftext|>, 151645 <|im_end|>, 151652/151653 vision start/end, 151655 image pad,
151656 video pad) appear in both and are checked against the tokenizer's own files by the tests.
transformers 5.19's Qwen3VLVisionConfig defaults equal the 8B vision tower except out_hidden_size
(3584 there); its Qwen3VLTextConfig defaults are no released model (32 layers, 32 KV heads, 22016).

Departures, all forced by the depth cut: 2 text layers (not 28 / 36), 2 vision blocks (not 24 / 27),
and deepstack_visual_indexes [0, 1] (the released [5, 11, 17] / [8, 16, 24] point past block 1):
two deepstack mergers instead of three, feeding text layers 0 and 1 as the real ones feed 0, 1, 2.
Each layer, block and merger keeps its real shape, so per-layer memory and time measured here
scale to the full depth by counting (docs/scaling.md); `full_config` gives the released depths.

Imports only torch and transformers (scripts/gpu_check.py runs on hosts without vLLM or Ray).
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path

# Token ids of Qwen3-VL's config.json (both sources above); the qwen3 tokenizer has the same ones.
TOKEN_IDS = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                 vision_end_token_id=151653)
EOS_ID, PAD_ID = 151645, 151643  # <|im_end|>, <|endoftext|>
CUT_TEXT_LAYERS, CUT_VISION_DEPTH = 2, 2
CUT_DEEPSTACK = [0, 1]


@dataclass(frozen=True)
class Shape:
    """One released model's config values (config.json names); depths are the released ones."""

    name: str
    source: str  # where the values were read
    text: dict  # text_config
    vision: dict  # vision_config
    tie_word_embeddings: bool


_ROPE = {"rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": [24, 20, 20], "mrope_interleaved": True}
_COMMON_TEXT = dict(vocab_size=151_936, head_dim=128, hidden_act="silu", rms_norm_eps=1e-6,
                    max_position_embeddings=262_144, attention_bias=False)
_COMMON_VISION = dict(num_heads=16, patch_size=16, spatial_merge_size=2, temporal_patch_size=2, in_channels=3,
                      num_position_embeddings=2304, hidden_act="gelu_pytorch_tanh")

SHAPES = {
    "2b": Shape(
        name="Qwen3-VL-2B-Instruct",
        source="xzhan34/openvino.genai src/cpp/src/modeling/tests/qwen3_vl_spec_test.cpp",
        text=dict(_COMMON_TEXT, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                  num_attention_heads=16, num_key_value_heads=8),
        vision=dict(_COMMON_VISION, depth=24, hidden_size=1024, intermediate_size=4096, out_hidden_size=2048,
                    deepstack_visual_indexes=[5, 11, 17]),
        tie_word_embeddings=True,
    ),
    "8b": Shape(
        name="Qwen3-VL-8B-Instruct",
        source="NVIDIA/TensorRT-LLM tests/unittest/_torch/modeling/test_modeling_qwen3vl.py",
        text=dict(_COMMON_TEXT, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                  num_attention_heads=32, num_key_value_heads=8),
        vision=dict(_COMMON_VISION, depth=27, hidden_size=1152, intermediate_size=4304, out_hidden_size=4096,
                    deepstack_visual_indexes=[8, 16, 24]),
        tie_word_embeddings=False,
    ),
}


def full_config(shape: str, *, text_layers: int | None = None, vision_depth: int | None = None,
                deepstack: list[int] | None = None):
    """A `Qwen3VLConfig` of `shape` ("2b" | "8b"); the released depths unless cut."""
    from transformers import Qwen3VLConfig

    s = SHAPES[shape]
    text = dict(s.text, rope_parameters=dict(_ROPE), tie_word_embeddings=s.tie_word_embeddings,
                bos_token_id=PAD_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    vision = dict(s.vision)
    if text_layers is not None:
        text["num_hidden_layers"] = text_layers
    if vision_depth is not None:
        vision["depth"] = vision_depth
    if deepstack is not None:
        vision["deepstack_visual_indexes"] = list(deepstack)
    return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=s.tie_word_embeddings,
                         **TOKEN_IDS)


def cut_config(shape: str):
    """The shape-true model: released widths, 2 text layers, 2 vision blocks, deepstack [0, 1]."""
    return full_config(shape, text_layers=CUT_TEXT_LAYERS, vision_depth=CUT_VISION_DEPTH, deepstack=CUT_DEEPSTACK)


def random_model(config, seed: int = 0, dtype: str = "bfloat16"):
    """Qwen3VLForConditionalGeneration with transformers' own random init (std 0.02), built directly
    in `dtype` (an fp32 build of the 8B shape would need 6.8 GB before the cast)."""
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        model = Qwen3VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.eos_token_id = EOS_ID
    model.generation_config.pad_token_id = PAD_ID
    return model.eval()


def parameter_counts(config) -> dict[str, int]:
    """Parameters by part, counted on the meta device (no memory): embed, lm_head (0 when tied),
    text_layer (one decoder layer), text_norm, vision_block (one block), vision_merger, deepstack_merger
    (one), vision_embed (patch + position embeddings), total."""
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    with torch.device("meta"):
        model = Qwen3VLForConditionalGeneration(config)

    def n(module) -> int:
        return sum(p.numel() for p in module.parameters())

    lm, vis = model.model.language_model, model.model.visual
    tied = model.lm_head.weight is lm.embed_tokens.weight
    counts = dict(embed=n(lm.embed_tokens), lm_head=0 if tied else n(model.lm_head), text_layer=n(lm.layers[0]),
                  text_norm=n(lm.norm), vision_block=n(vis.blocks[0]), vision_merger=n(vis.merger),
                  deepstack_merger=n(vis.deepstack_merger_list[0]) if len(vis.deepstack_merger_list) else 0,
                  vision_embed=n(vis.patch_embed) + n(vis.pos_embed), total=n(model))
    return counts


def build(out_dir: str | os.PathLike, shape: str, seed: int = 0) -> Path:
    """Save the shape-true model (bf16), Qwen3's real tokenizer and the Qwen3-VL processor to out_dir."""
    from medmo_rl.tiny_model import QWEN3_VL_CHAT_TEMPLATE, qwen3_tokenizer, save_processor

    if shape not in SHAPES:
        raise ValueError(f"shape {shape!r}; allowed: {', '.join(SHAPES)}")
    tok = qwen3_tokenizer()  # first: a missing package fails before minutes of init
    ids = {k: tok.convert_tokens_to_ids(t) for k, t in (("image_token_id", "<|image_pad|>"),
                                                        ("video_token_id", "<|video_pad|>"),
                                                        ("vision_start_token_id", "<|vision_start|>"),
                                                        ("vision_end_token_id", "<|vision_end|>"))}
    if ids != TOKEN_IDS:
        raise ValueError(f"tokenizer ids {ids} differ from Qwen3-VL's config.json {TOKEN_IDS}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = cut_config(shape)
    model = random_model(config, seed)
    model.save_pretrained(out)
    save_processor(out, tok, QWEN3_VL_CHAT_TEMPLATE)
    meta = {"seed": seed, "shape": shape, "params": sum(p.numel() for p in model.parameters()), "dtype": "bfloat16"}
    (out / "MEDMO_SHAPE.json").write_text(json.dumps(meta))
    return out


def resolve_shape_model(shape: str, cache_dir: str | os.PathLike, seed: int = 0) -> Path:
    """The shape-true model built once into cache_dir."""
    out = Path(cache_dir) / f"shape-{shape}-seed{seed}"
    if not (out / "MEDMO_SHAPE.json").is_file():
        build(out, shape, seed)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", nargs="?")
    ap.add_argument("--shape", choices=sorted(SHAPES), required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--print-config", action="store_true", help="print the cut config and parameter counts; build nothing")
    args = ap.parse_args()
    if args.print_config or not args.out_dir:
        cut, full = cut_config(args.shape), full_config(args.shape)
        print(json.dumps({"cut_config": cut.to_dict(), "parameters_cut": parameter_counts(cut),
                          "parameters_full_depth": parameter_counts(full)}, indent=1, default=str))
        return
    out = build(args.out_dir, args.shape, args.seed)
    print(f"{SHAPES[args.shape].name}-shaped model written to {out}: {(out / 'MEDMO_SHAPE.json').read_text()}")


if __name__ == "__main__":
    main()
