"""An offline, deterministic, ~0.9M-parameter Qwen3-VL — the tiny default's base model.

    python -m medmo_rl.tiny_model OUT_DIR [--seed 0]

Builds, with no network and in seconds: a `Qwen3VLForConditionalGeneration` with random weights
(text hidden 128, 2 layers, 4 heads of dim 32, 2 KV heads; vision depth 2, hidden 64, patch 16,
merge 2 — sizes measured to learn grounding on 2 CPU cores in minutes), a byte-level BPE
tokenizer trained on a generated corpus with the Qwen special tokens and a chat template, and a
Qwen3-VL processor; all saved with `save_pretrained`, so transformers and vLLM load the folder
like any real checkpoint. Same seed → byte-identical weights and tokenizer.

Digits are split one per token (Qwen's pre-tokenizer), so a box answer is ~25 tokens.
`resolve_model(path)` accepts any real HF checkpoint folder (e.g. Qwen3-VL-8B-Instruct) instead.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

QWEN_SPECIAL = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)
# Not special: they must survive decoding, because the rewards read them in the completion text.
PLAIN_ADDED = ("<think>", "</think>", "<answer>", "</answer>", "<box>", "</box>")
# Qwen2/3's pre-tokenizer: single digits, letters runs, punctuation runs, newlines.
QWEN_PRETOKENIZE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>' + '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def _corpus(seed: int) -> list[str]:
    """Text the BPE learns merges from: the synthetic tasks' phrasing plus common medical words."""
    import numpy as np

    from medmo_rl import synthetic

    rng = np.random.default_rng(seed)
    lines = [q + " " + a for q, a in synthetic._TEXT_QA]
    lines += ["system user assistant", synthetic.GROUNDING_PROMPT, "Is there a lesion in the image?",
              synthetic.COUNT_PROMPT, synthetic.KIND_PROMPT, "Two bright lesions: a nodule in the upper left and a mass.",
              "Describe the image.", "Write the findings.", "A normal image with no lesion.",
              "Findings: three lesions: a large mass in the upper left; a small nodule. Impression: nodule and mass.", "yes no maybe",
              "Think inside <think> </think>, then give the final answer inside <answer> </answer>."]
    words = ("the a of and in with no is are patient chest x-ray ct mri ultrasound lesion nodule mass "
             "fracture opacity effusion pneumonia cell nuclei platelets rbc wbc blood tumor normal "
             "abnormal left right upper lower middle centre small large bright dark round image "
             "findings impression heart lung liver kidney brain bone which what where how").split()
    for _ in range(400):
        lines.append(" ".join(rng.choice(words, size=12)).capitalize() + ".")
    return [ln for ln in lines if ln] * 3


def build_tokenizer(seed: int = 0):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=768, special_tokens=list(QWEN_SPECIAL), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=list(QWEN_SPECIAL[1:]), model_max_length=32768,
    )
    fast.add_tokens(list(PLAIN_ADDED))
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Build and save the tiny model + tokenizer + processor into out_dir; returns the path."""
    import torch
    from transformers import (Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration,
                              Qwen3VLProcessor)
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(seed)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    vocab = (len(tokenizer) + 63) // 64 * 64
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=vocab, hidden_size=128, intermediate_size=384, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                             "mrope_section": [8, 4, 4], "mrope_interleaved": True},
            tie_word_embeddings=True, bos_token_id=None, eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=2, hidden_size=64, intermediate_size=128, num_heads=2, patch_size=16, spatial_merge_size=2,
            temporal_patch_size=2, out_hidden_size=128, num_position_embeddings=256, deepstack_visual_indexes=[1],
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config).to(torch.float32).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out)
    # 64×64 → 16 patches → 4 image tokens after the 2×2 merge; up to 1280² for real images.
    size = {"shortest_edge": 32 * 32, "longest_edge": 1280 * 1280}
    image_processor = Qwen2VLImageProcessor(size=size, patch_size=16, merge_size=2, temporal_patch_size=2,
                                            image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    video_processor = Qwen3VLVideoProcessor(size=size, patch_size=16, merge_size=2, temporal_patch_size=2)
    processor = Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                 video_processor=video_processor, chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "MEDMO_TINY.json").write_text(json.dumps({"seed": seed, "params": sum(p.numel() for p in model.parameters())}))
    return out


def resolve_model(path: str, cache_dir: str | os.PathLike, seed: int = 0) -> Path:
    """`path` if given (must hold config.json), else the tiny model built once into cache_dir."""
    if path:
        p = Path(path)
        if not (p / "config.json").is_file():
            raise FileNotFoundError(f"model.path={path!r}: no config.json there (expected a HF checkpoint folder)")
        return p
    out = Path(cache_dir) / f"tiny-qwen3vl-seed{seed}"
    if not (out / "MEDMO_TINY.json").is_file():
        build(out, seed)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = build(args.out_dir, args.seed)
    print(f"tiny Qwen3-VL written to {out}: {(out / 'MEDMO_TINY.json').read_text()}")


if __name__ == "__main__":
    main()
