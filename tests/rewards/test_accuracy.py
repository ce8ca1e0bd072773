import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medmo_rl.schema import SampleError
from rewards.accuracy import label_accuracy, normalize_answer
from rewards.parsing import parse_completion

from reward_testlib import GROUNDING, MCQ, VQA_YES


def test_normalize_answer():
    assert normalize_answer("  The  Left-Lung, an Effusion! ") == "left lung effusion"


@pytest.mark.parametrize(
    "completion, want",
    [
        ("<answer>Yes</answer>", 1.0),
        ("<think>\nno doubt\n</think>\n<answer>\nYes, a fracture.\n</answer>", 1.0),
        ("<answer>No</answer>", 0.0),
        ("yes", 1.0),  # no <answer>: the text after the reasoning
        ("<think>maybe yes</think>no", 0.0),  # reasoning is not the answer
        ("<think>yes, unfinished", 0.0),  # cut off mid-thought: no answer
        ("<answer>There is a fracture: yes</answer>", 0.0),  # closed: first word decides
        ("", 0.0),
    ],
)
def test_closed_yes_no(completion, want):
    assert label_accuracy(completion, VQA_YES) == want


@pytest.mark.parametrize(
    "completion, want",
    [
        ("<answer>B</answer>", 1.0),
        ("<answer>(B)</answer>", 1.0),
        ("<answer>B. Pneumonia</answer>", 1.0),
        ("<answer>Answer: B</answer>", 1.0),
        ("<answer>b</answer>", 1.0),
        ("<answer>pneumonia</answer>", 1.0),  # option text
        ("<answer>The finding is pneumonia.</answer>", 1.0),  # the only option named
        ("<answer>A</answer>", 0.0),
        ("<answer>Effusion</answer>", 0.0),
        ("<answer>D</answer>", 0.0),  # no such option
        ("<answer>a pneumonia or an effusion</answer>", 0.0),  # two options named: none
    ],
)
def test_mcq_letter_or_text(completion, want):
    assert label_accuracy(completion, MCQ) == want


def test_mcq_gold_given_as_text_and_option_inside_another():
    ref = {"task": "vqa", "answer": "No pneumonia", "choices": ["Pneumonia", "No pneumonia"], "images": ["x.png"]}
    assert label_accuracy("<answer>No pneumonia</answer>", ref) == 1.0
    assert label_accuracy("<answer>B</answer>", ref) == 1.0
    assert label_accuracy("<answer>I see no pneumonia here</answer>", ref) == 1.0
    assert label_accuracy("<answer>Pneumonia</answer>", ref) == 0.0


def test_yes_no_maybe():
    ref = {"task": "text_qa", "answer": "Maybe."}
    assert label_accuracy("<answer>maybe</answer>", ref) == 1.0
    assert label_accuracy("<answer>yes</answer>", ref) == 0.0


def test_open_answer_normalized_exact_match():
    ref = {"task": "vqa", "answer": "The left lung", "images": ["x.png"]}
    assert label_accuracy("<answer>left lung.</answer>", ref) == 1.0
    assert label_accuracy("<answer>LEFT  LUNG</answer>", ref) == 1.0
    assert label_accuracy("<answer>the left lung base</answer>", ref) == 0.0


def test_grounding_fraction_of_unique_labels_named():
    ref = {"task": "grounding", "answer": "", "images": ["x.png"], "image_size": [100, 100],
           "boxes": [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], "labels": ["Nodule", "nodule", "Effusion"]}
    # unique labels {nodule, effusion}
    assert label_accuracy("<answer>Nodule <box>[[0, 0, 100, 100]]</box></answer>", ref) == 0.5
    both = "<answer>nodule <box>[[0, 0, 100, 100]]</box>; effusion <box>[[1, 1, 2, 2]]</box></answer>"
    assert label_accuracy(both, ref) == 1.0
    assert label_accuracy('<answer>[{"bbox_2d": [0, 0, 9, 9], "label": "effusion"}]</answer>', ref) == 0.5
    assert label_accuracy("<answer>I see an effusion and a nodule</answer>", ref) == 1.0  # named in the text
    assert label_accuracy("<answer>mass <box>[[0, 0, 100, 100]]</box></answer>", ref) == 0.0
    assert label_accuracy("<answer>nodules</answer>", ref) == 0.0  # whole words only


def test_grounding_without_labels_is_neutral():
    assert label_accuracy("anything", {**GROUNDING.to_json(), "labels": ["", ""]}) == 0.5


def test_parsed_completion_is_accepted():
    assert label_accuracy(parse_completion("<answer>yes</answer>"), VQA_YES) == 1.0


def test_bad_reference_raises_naming_the_field():
    with pytest.raises(SampleError, match="'task'"):
        label_accuracy("yes", {"task": "diagnosis", "answer": "yes"})
    with pytest.raises(SampleError, match="'answer'"):
        label_accuracy("yes", {"task": "vqa", "answer": 3})
    with pytest.raises(SampleError, match="reference"):
        label_accuracy("yes", ["not", "a", "record"])


junk = st.one_of(st.text(max_size=200), st.none(), st.integers(), st.binary(max_size=10), st.lists(st.text(max_size=5), max_size=3))


@settings(max_examples=200, deadline=None)
@given(junk)
def test_garbage_completions_never_raise_and_stay_in_range(completion):
    for ref in (VQA_YES, MCQ, GROUNDING):
        assert 0.0 <= label_accuracy(completion, ref) <= 1.0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["<answer>", "</answer>", "<think>", "</think>", "<box>", "</box>", "[", "]", "1", ",", "yes", " ", "B"]), max_size=30).map("".join))
def test_tag_soup_never_raises(completion):
    for ref in (VQA_YES, MCQ, GROUNDING):
        assert 0.0 <= label_accuracy(completion, ref) <= 1.0
