"""python -m medmo_rl.headroom: the best-of-G oracle and the per-image F1 it ranks by (medmo_rl/grounding.py),
by hand; the table (medmo_rl/driver/headroom.py)."""
import pytest

from medmo_rl.driver.headroom import markdown, mean_rows
from medmo_rl.grounding import best_of, image_f1, score_image
from medmo_rl.schema import Sample


def _g(boxes):
    return Sample(id="g", task="grounding", prompt="Locate every lesion.", answer="", images=("x.png",),
                  boxes=tuple(boxes), labels=("nodule",) * len(boxes), image_size=(100, 100))


TWO_GT = _g([(0.0, 0.0, 20.0, 20.0), (50.0, 50.0, 70.0, 70.0)])
HIT_A = "[0, 0, 200, 200]"
HIT_B = "[500, 500, 700, 700]"
HALF_B = "[500, 500, 700, 800]"  # IoU with b = 400 / 600 = 2/3
MISS = "[900, 900, 990, 990]"


def _c(*boxes):
    return f"<answer>nodule <box>[{', '.join(boxes)}]</box></answer>"


def test_image_f1_is_two_tp_over_predictions_plus_gt():
    # two GT, three predictions (a hit, a hit, one far off): TP 2 → 2·2 / (3 + 2) = 0.8
    assert image_f1(score_image(TWO_GT, _c(HIT_A, HIT_B, MISS))) == pytest.approx(0.8)
    assert image_f1(score_image(TWO_GT, _c(HIT_A))) == pytest.approx(2 / 3)  # one miss: 2·1 / (1 + 2)
    assert image_f1(score_image(TWO_GT, "no box")) == 0.0
    assert image_f1(score_image(_g([]), "no box")) == 0.0  # neither predictions nor GT: 0, not a division by 0


def test_best_of_ranks_by_f1_then_iou_sum_then_slot():
    comps = [_c(HIT_A), _c(HIT_A, HIT_B, MISS), _c(HIT_A, HALF_B), _c(HIT_A, HIT_B)]
    # F1: 2/3, 0.8, 1.0 (IoU 2/3 ≥ 0.5 is a TP), 1.0 → slots 2 and 3 tie on F1; 3 has the larger Σ IoU
    assert best_of([TWO_GT], [comps]) == [_c(HIT_A, HIT_B)]
    # a full tie keeps the earlier slot
    assert best_of([TWO_GT, TWO_GT], [[_c(HIT_A), _c(HIT_A)], [_c(MISS), _c(HIT_B)]]) == [_c(HIT_A), _c(HIT_B)]
    with pytest.raises(ValueError):
        best_of([TWO_GT], [])  # one list of completions per sample


def test_mean_rows_and_table():
    rows = {"greedy": {"f1_50": 0.5, "mean_iou": 0.4, "precision50": 0.5, "recall50": 0.5, "boxes_per_image": 2.0},
            "T=0.3 sample": mean_rows([{"f1_50": 0.2, "mean_iou": 0.1, "precision50": 0.2, "recall50": 0.2,
                                        "boxes_per_image": 1.0},
                                       {"f1_50": 0.4, "mean_iou": 0.3, "precision50": 0.4, "recall50": 0.4,
                                        "boxes_per_image": 3.0}])}
    assert rows["T=0.3 sample"]["f1_50"] == pytest.approx(0.3) and rows["T=0.3 sample"]["boxes_per_image"] == 2.0
    table = markdown(rows).splitlines()
    assert table[0].startswith("| decoding | f1_50 | mean_iou") and len(table) == 4
    assert table[3] == "| T=0.3 sample | 0.300 | 0.200 | 0.300 | 0.300 | 2.00 |"
