"""rewards.labels: the reference record as a JSON label, and the cache of validated references."""
import json

import pytest
from reward_testlib import GROUNDING, MCQ, VQA_YES

from rewards.labels import LabelError, ReferenceCache, decode_label, encode_label, label_json


@pytest.mark.parametrize("sample", [GROUNDING, MCQ, VQA_YES])
def test_round_trip_keeps_every_field_scoring_reads(sample):
    label = encode_label(sample)
    assert isinstance(label, str) and "prompt" not in json.loads(label) and "images" not in json.loads(label)
    back = decode_label(label)
    for field in ("id", "task", "answer", "boxes", "labels", "choices", "image_size", "source"):
        assert getattr(back, field) == getattr(sample, field), field


def test_a_full_record_decodes_too():
    assert decode_label(json.dumps(GROUNDING.to_json())).boxes == GROUNDING.boxes
    assert label_json(MCQ)["choices"] == ["Effusion", "Pneumonia", "No finding"]


@pytest.mark.parametrize("label, field, words", [
    ("{oops", "label", "not valid JSON"),
    ("[1, 2]", "label", "must be a JSON object, got list"),
    ('{"task": "diagnosis", "answer": "x"}', "label.task", "unknown task 'diagnosis'"),
    ('{"task": "grounding", "answer": "", "boxes": [[5, 5, 1, 1]], "labels": ["a"], "image_size": [9, 9]}',
     "label.boxes[0]", "degenerate"),
    ('{"task": "grounding", "answer": "", "boxes": [[0, 0, 5, 5]], "labels": ["a"]}', "label.image_size", "required"),
    ('{"task": "vqa", "answer": "y", "image_size": [1e999, 2]}', "label", "not valid JSON"),
    ('{"task": "vqa", "answer": "y", "colour": "red"}', "label.colour", "unknown field"),
])
def test_errors_name_the_field(label, field, words):
    with pytest.raises(LabelError) as info:
        decode_label(label)
    assert info.value.field == field and words in str(info.value) and str(info.value).startswith(f"{field}: ")


def test_a_non_string_label_is_an_error():
    with pytest.raises(LabelError, match="must be a JSON string, got dict"):
        decode_label({"task": "vqa"})


def test_cache_builds_each_reference_once_and_keeps_errors():
    built = []

    def build(key):
        built.append(key)
        return decode_label(key)

    cache = ReferenceCache(max_entries=2)
    good, bad = encode_label(VQA_YES), '{"task": "?"}'
    assert cache.get(good, build) == cache.get(good, build) == decode_label(good)
    for _ in range(2):
        with pytest.raises(LabelError, match="label.task"):
            cache.get(bad, build)
    assert built == [good, bad]
    cache.get(encode_label(MCQ), build)  # a third entry evicts the oldest
    assert len(cache) == 2
    cache.get(good, build)
    assert built[-1] == good and len(built) == 4


def test_cache_of_size_zero_validates_every_time():
    built = []
    cache = ReferenceCache(0)
    for _ in range(3):
        cache.get(encode_label(VQA_YES), lambda k: built.append(k) or decode_label(k))
    assert len(built) == 3 and len(cache) == 0
