from hypothesis import given, settings
from hypothesis import strategies as st

from rewards.format import tag_count


def test_well_formed_completion_scores_one():
    assert tag_count("<think>\nlook at the film\n</think>\n<answer>\nyes\n</answer>") == 1.0


def test_open_r1_anchor_inline_tags_score_zero():
    assert tag_count("<think>x</think><answer>y</answer>") == 0.0


def test_quarter_per_tag():
    assert tag_count("<think>\nx</think><answer>y</answer>") == 0.25  # only "<think>\n"
    assert tag_count("<think>\nx\n</think>\nyes") == 0.5
    assert tag_count("x\n<answer>\ny\n</answer>") == 0.5
    # a tag that occurs twice earns nothing
    assert tag_count("<think>\na\n</think>\n<think>\nb\n</think>\n<answer>\ny\n</answer>") == 0.5


def test_non_string_scores_zero():
    for junk in (None, 3, b"<think>\n", ["<think>\n"]):
        assert tag_count(junk) == 0.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "\n", "x", " "]), max_size=40).map("".join))
def test_garbage_in_range_and_quarter_steps(text):
    v = tag_count(text)
    assert 0.0 <= v <= 1.0 and (4 * v).is_integer()
