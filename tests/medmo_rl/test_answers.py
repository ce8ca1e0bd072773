"""medmo_rl/answers.py: the one answer normalisation, and the reward and the eval scoring alike.

The pairs below are ones on which the eval's old open-answer rule (SQuAD: punctuation deleted)
or the old MCQ reader of medmo_rl.metrics (earliest option named, uppercase letters only)
disagreed with the reward.
"""
import pytest

from medmo_rl.answers import label_accuracy, normalize_answer
from medmo_rl.benchmarks import score_benchmark
from medmo_rl.config import RewardConfig
from medmo_rl.schema import Sample
from rewards import score
from rewards.accuracy import label_accuracy as reward_label_accuracy


@pytest.mark.parametrize("text, want", [
    ("The  Left lung.", "left lung"),
    ("An X-ray, (PA)!", "x ray pa"),  # punctuation → space; SQuAD would give "xray pa"
    ("(C) kidney", "c kidney"),
    ("Answer: B", "answer b"),
])
def test_normalize_answer_turns_punctuation_into_spaces(text, want):
    assert normalize_answer(text) == want


FOUR = ("one", "two", "three", "four")


@pytest.mark.parametrize("completion, picked", [
    ("B", 1), ("B.", 1), ("(C)", 2), ("D) four", 3), ("A: one", 0),
    ("two", 1), ("The answer is three.", 2),
    ("yes, no effusion", None),  # names no option
    ("E", None),  # a letter past the options
    ("A mass in the lung", None),  # a sentence starting with the article "A" is no letter
])
def test_mcq_option_read_from_the_answer(completion, picked):
    for gold in range(4):
        ref = Sample(id="m", task="text_qa", prompt="Q", answer="ABCD"[gold], choices=FOUR)
        assert label_accuracy(completion, ref) == float(picked == gold)


def test_mcq_an_option_inside_a_longer_named_one_does_not_count():
    ref = Sample(id="m", task="text_qa", prompt="Q", answer="left lower lobe", choices=("left", "left lower lobe"))
    assert label_accuracy("left lower lobe", ref) == 1.0
    assert label_accuracy("in the left lower lobe", ref) == 1.0  # "left" is inside the named "left lower lobe"


def _vqa(answer, choices=()):
    return Sample(id="v", task="vqa", prompt="Q?", answer=answer, images=("x.png",), choices=choices)


YES_NO = ("yes", "no")
ORGANS = ("heart", "liver", "kidney")
GROUNDING = Sample(id="g", task="grounding", prompt="Locate.", answer="", images=("x.png",),
                   boxes=((10.0, 10.0, 30.0, 30.0), (50.0, 50.0, 70.0, 70.0)), labels=("Nodule", "effusion"),
                   image_size=(100, 100))

# (completion, reference, the eval's metric for that pair, the value both must give)
PAIRS = [
    ("<answer>Yes, there is a fracture.</answer>", _vqa("yes", YES_NO), "closed/accuracy", 1.0),
    ("<think>yes</think>\nNo", _vqa("yes", YES_NO), "closed/accuracy", 0.0),
    ("<answer>Answer: C</answer>", _vqa("kidney", ORGANS), "closed/accuracy", 1.0),
    ("c", _vqa("C", ORGANS), "closed/accuracy", 1.0),  # one lowercase letter is a letter
    ("(C) kidney", _vqa("kidney", ORGANS), "closed/accuracy", 1.0),
    ("kidney or liver", _vqa("kidney", ORGANS), "closed/accuracy", 0.0),  # two options named: none picked
    ("<answer>x-ray</answer>", _vqa("X ray"), "open/exact_match", 1.0),  # SQuAD: "xray" ≠ "x ray"
    ("The left-lung.", _vqa("left lung"), "open/exact_match", 1.0),  # SQuAD: "leftlung" ≠ "left lung"
    ("the left lung base", _vqa("left lung"), "open/exact_match", 0.0),
    ("<answer>Nodule. <box>[[100, 100, 300, 300]]</box></answer>", GROUNDING, "grounding/label_accuracy", 0.5),
    ("I see an effusion and a nodule", GROUNDING, "grounding/label_accuracy", 1.0),
    ("mass <box>[[100, 100, 300, 300]]</box>", GROUNDING, "grounding/label_accuracy", 0.0),
]


@pytest.mark.parametrize("completion, ref, metric, want", PAIRS)
def test_reward_and_eval_score_a_pair_alike(completion, ref, metric, want):
    reward = score(completion, ref, num_tokens=10, config=RewardConfig())["parts"]["accuracy"]
    assert reward == reward_label_accuracy(completion, ref) == want
    assert score_benchmark([ref], [completion])[metric] == want
