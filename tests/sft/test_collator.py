"""sft/collator.py on the real tiny processor and synthetic records."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from medmo_rl.prompts import target_text
from medmo_rl.schema import load_samples
from medmo_rl.synthetic import GROUNDING_PROMPT
from sft.collator import SFTCollator
from sft.loss import IGNORE


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def grounding(synthetic_dir):
    return load_samples(synthetic_dir["grounding"]).samples


def _collator(processor, **kw):
    kw.setdefault("max_pixels", 64 * 64)
    kw.setdefault("max_seq_len", 256)
    return SFTCollator(processor, **kw)


@pytest.mark.parametrize("answer_format", ["plain", "think_answer"])
def test_labels_are_exactly_the_answer_and_end_of_turn(processor, grounding, answer_format):
    sample = grounding[0]
    col = _collator(processor, answer_format=answer_format)
    batch = col([sample])
    ids, labels = batch.input_ids[0], batch.labels[0]
    kept = labels[labels != IGNORE]
    assert processor.tokenizer.decode(kept) == target_text(sample, answer_format) + "<|im_end|>"
    assert torch.equal(kept, ids[labels != IGNORE])
    # the answer is the tail of the sequence; everything before it (system, user, header) is masked
    n = len(kept)
    assert (labels[:-n] == IGNORE).all() and (labels[-n:] != IGNORE).all()
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    pads = ids == image_pad
    assert pads.sum() == 4  # 64×64 → 16 patches → 4 tokens after the 2×2 merge
    assert (labels[pads] == IGNORE).all()
    assert torch.equal(batch.mm_token_type_ids[0].bool(), pads)
    assert batch.image_grid_thw.tolist() == [[1, 4, 4]] and batch.pixel_values.shape[0] == 16
    prompt = processor.tokenizer.decode(ids[:-n])
    assert prompt.endswith("<|im_start|>assistant\n") and GROUNDING_PROMPT in prompt
    if answer_format == "think_answer":
        assert prompt.startswith("<|im_start|>system\n")
    assert batch.num_target_tokens == n


def test_batch_is_right_padded_and_images_follow_row_order(processor, synthetic_dir, grounding):
    text_qa = load_samples(synthetic_dir["text_qa"]).samples[0]
    col = _collator(processor, max_pixels=32 * 32)  # stage resolution: 64 px images shrink to 32 px
    batch = col([grounding[0], text_qa, grounding[1]])
    assert batch.sample_ids == (grounding[0].id, text_qa.id, grounding[1].id)
    lengths = batch.attention_mask.sum(1)
    for row in range(3):
        n = int(lengths[row])
        assert (batch.attention_mask[row, :n] == 1).all() and (batch.attention_mask[row, n:] == 0).all()
        assert (batch.input_ids[row, n:] == processor.tokenizer.pad_token_id).all()
        assert (batch.labels[row, n:] == IGNORE).all()
    # two images of 32×32 → 4 patches, 1 token each; the text-only row has none
    assert batch.image_grid_thw.tolist() == [[1, 2, 2], [1, 2, 2]]
    assert batch.pixel_values.shape[0] == 8
    assert batch.mm_token_type_ids.sum(1).tolist() == [1, 0, 1]
    assert processor.tokenizer.decode(batch.labels[1][batch.labels[1] != IGNORE]) == text_qa.answer + "<|im_end|>"


def test_text_only_batch_gets_a_blank_image_row_without_labels(processor, synthetic_dir):
    text_qa = load_samples(synthetic_dir["text_qa"]).samples[:2]
    col = _collator(processor)
    batch = col(text_qa)
    assert batch.input_ids.shape[0] == 3 and batch.sample_ids == tuple(s.id for s in text_qa)
    assert batch.image_grid_thw.tolist() == [[1, 2, 2]]
    assert (batch.labels[2] == IGNORE).all()
    assert batch.num_target_tokens == sum(
        len(processor.tokenizer(s.answer, add_special_tokens=False)["input_ids"]) + 1 for s in text_qa)
    no_blank = _collator(processor, ensure_image=False)(text_qa)
    assert no_blank.input_ids.shape[0] == 2 and no_blank.pixel_values is None


def test_bad_records_are_skipped_counted_and_named(processor, grounding, tmp_path, caplog):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not a png at all")
    missing = dataclasses.replace(grounding[1], id="rec-missing", images=(str(tmp_path / "gone.png"),))
    broken = dataclasses.replace(grounding[2], id="rec-corrupt", images=(str(corrupt),))
    long_ = dataclasses.replace(grounding[3], id="rec-long", prompt="Locate the lesion. " * 80)
    good = [grounding[0], grounding[4]]
    col = _collator(processor, max_seq_len=200)
    with caplog.at_level("WARNING"):
        batch = col([good[0], missing, broken, long_, good[1], missing])
    assert batch.sample_ids == (good[0].id, good[1].id)
    assert dict(col.skip_counts) == {"missing_image": 2, "corrupt_image": 1, "too_long": 1}
    assert col.skipped_ids == {"rec-missing": "missing_image", "rec-corrupt": "corrupt_image", "rec-long": "too_long"}
    for rid in ("rec-missing", "rec-corrupt", "rec-long"):
        assert sum(rid in r.getMessage() for r in caplog.records) == 1  # logged once, counted every time
    assert batch.image_grid_thw.shape[0] == 2


def test_all_skipped_still_gives_a_trainable_batch_with_no_targets(processor, grounding, tmp_path):
    missing = dataclasses.replace(grounding[0], id="gone", images=(str(tmp_path / "gone.png"),))
    batch = _collator(processor)([missing])
    assert batch.sample_ids == () and batch.num_target_tokens == 0 and batch.pixel_values is not None


def test_one_processor_call_splits_images_back_to_their_rows(processor, grounding, tmp_path):
    from PIL import Image

    wide = tmp_path / "wide.png"
    Image.open(grounding[1].images[0]).resize((128, 64)).save(wide)
    wide_sample = dataclasses.replace(grounding[1], images=(str(wide),), image_size=(128, 64))
    samples = [grounding[0], wide_sample, grounding[2]]
    col = _collator(processor, max_pixels=128 * 64)
    together = col.encode_many(samples)
    alone = [col.encode(s) for s in samples]
    assert [e.image_grid_thw.tolist() for e in together] == [[[1, 4, 4]], [[1, 4, 8]], [[1, 4, 4]]]
    for a, b in zip(together, alone):
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)
        assert torch.equal(a.pixel_values, b.pixel_values) and torch.equal(a.mm_token_type_ids, b.mm_token_type_ids)
