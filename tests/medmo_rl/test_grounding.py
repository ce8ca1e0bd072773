"""medmo_rl/grounding.py: the one grounding scorer, numbers by hand."""
import pytest

import medmo_rl.answers
import medmo_rl.grounding
from medmo_rl.grounding import score_image, score_images, summarize
from medmo_rl.schema import Sample


def _g(boxes, labels=None, size=(100, 100)):
    return Sample(id="g", task="grounding", prompt="Locate.", answer="", images=("x.png",), boxes=tuple(boxes),
                  labels=tuple(labels or ["nodule"] * len(boxes)), image_size=size)


def test_hungarian_not_best_iou_per_reference_box():
    # GT a = (0,0,50,50), b = (0,0,50,25) inside a; one prediction exactly on a.
    # IoU(p, a) = 1, IoU(p, b) = 1250/2500 = 0.5. Best IoU per GT box would give (1 + 0.5)/2 = 0.75;
    # one-to-one Hungarian matching gives p to a, b unmatched: (1 + 0)/2 = 0.5
    s = _g([(0.0, 0.0, 50.0, 50.0), (0.0, 0.0, 50.0, 25.0)])
    assert score_image(s, "nodule <box>[[0, 0, 500, 500]]</box>").iou == pytest.approx(0.5)


def test_boxes_come_from_the_answer_part_in_pixels():
    s = _g([(100.0, 50.0, 200.0, 100.0)], size=(200, 100))
    c = ("<think>nodule <box>[[0, 0, 100, 100]]</box></think>\n"
         "<answer>Nodule <box>[[500, 500, 1000, 1000]]</box></answer>")
    g = score_image(s, c)
    # the reasoning's box is ignored; 0–1000 → px: x·200/1000, y·100/1000
    assert g.boxes == ((100.0, 50.0, 200.0, 100.0),) and g.labels == ("Nodule",)
    assert g.iou == 1.0 and g.parsed and g.label_accuracy == 1.0


def test_invalid_boxes_are_parsed_but_not_scored():
    s = _g([(10.0, 10.0, 30.0, 30.0)])
    g = score_image(s, "nodule <box>[[300, 300, 100, 100], [100, 100, 300, 200]]</box>")  # first one inverted
    assert g.parsed and g.boxes == ((10.0, 10.0, 30.0, 20.0),)
    assert g.iou == pytest.approx(200 / 400)
    none = score_image(s, None)  # an engine error
    assert (none.parsed, none.boxes, none.iou) == (False, (), 0.0)


def test_summary_by_hand_with_labels_compared_normalised():
    s = [_g([(10.0, 10.0, 30.0, 30.0)]), _g([(0.0, 0.0, 50.0, 50.0)], labels=["Mass"])]
    comps = ["<answer>Nodule. <box>[[100, 100, 300, 300]]</box></answer>",  # IoU 1; "Nodule." names class nodule
             "mass <box>[[0, 0, 250, 500]]</box>"]  # IoU 0.5, class mass
    m = summarize(s, score_images(s, comps))
    assert m.mean_iou == pytest.approx(0.75) and m.parse_rate == 1.0 and m.label_accuracy == 1.0 and m.n == 2
    assert m.map50 == pytest.approx(1.0)  # both TP at IoU >= 0.5 once labels are normalised
    wrong = summarize(s, score_images(s, [comps[0], "tumour <box>[[0, 0, 250, 500]]</box>"]))
    assert wrong.map50 == pytest.approx(0.5)  # class mass never detected: AP 0


def test_the_completion_is_parsed_once(monkeypatch):
    calls = []
    real = medmo_rl.grounding.parse_completion
    monkeypatch.setattr(medmo_rl.grounding, "parse_completion", lambda c: calls.append(c) or real(c))
    monkeypatch.setattr(medmo_rl.answers, "parse_completion", lambda c: pytest.fail("parsed twice"))
    assert score_image(_g([(10.0, 10.0, 30.0, 30.0)]), "nodule <box>[[100, 100, 300, 300]]</box>").iou == 1.0
    assert len(calls) == 1


def test_bad_inputs_raise():
    no_size = Sample(id="n", task="grounding", prompt="p", answer="", boxes=((1.0, 1.0, 2.0, 2.0),), labels=("a",))
    with pytest.raises(ValueError, match="image_size"):
        score_image(no_size, "a <box>[[1, 1, 2, 2]]</box>")
    with pytest.raises(ValueError):
        score_images([no_size], [])
    negative = Sample(id="neg", task="grounding", prompt="p", answer="no finding")  # no GT box, no size
    assert score_image(negative, "no finding").iou == 1.0
    invented = score_image(negative, "a <box>[[1, 1, 2, 2]]</box>")
    assert invented.iou == 0.0 and invented.parsed and len(invented.boxes) == 1
    with pytest.raises(ValueError, match="one per sample"):
        summarize([_g([(1.0, 1.0, 2.0, 2.0)])], [])


def test_multi_object_metrics_by_hand_two_gt_three_predictions_one_miss():
    """Image A: GT a = (0,0,20,20), b = (50,50,90,90); predictions p1 = a exactly (IoU 1),
    p2 = (50,50,90,70) on b (IoU 800/1600 = 0.5, a TP at the ≥ 0.5 rule), p3 = (20,60,40,80) far
    from both (an FP: Hungarian gives b to p2, whose IoU 0.5 beats p3's 0).
    Image B: GT c = (10,10,30,30) missed: the only prediction (60,60,80,80) has IoU 0 with c.
    Pooled: Σ IoU = 1 + 0.5 + 0 over 3 GT boxes → mean_iou 0.5; TP = 2 of 4 predictions
    → precision 0.5, TP = 2 of 3 GT → recall 2/3, F1 = 2·0.5·(2/3)/(0.5 + 2/3) = 4/7;
    count_acc: A has 3 ≠ 2, B has 1 = 1 → 0.5; boxes_per_image (3 + 1)/2 = 2."""
    a = _g([(0.0, 0.0, 20.0, 20.0), (50.0, 50.0, 90.0, 90.0)])
    b = _g([(10.0, 10.0, 30.0, 30.0)])
    comps = ["nodule <box>[[0, 0, 200, 200], [500, 500, 900, 700], [200, 600, 400, 800]]</box>",
             "nodule <box>[[600, 600, 800, 800]]</box>"]
    scores = score_images([a, b], comps)
    assert (scores[0].tp50, scores[0].n_pred, scores[0].n_gt) == (2, 3, 2)
    assert scores[0].iou == pytest.approx(0.75) and scores[1].iou == 0.0
    m = summarize([a, b], scores)
    assert m.mean_iou == pytest.approx(1.5 / 3)  # per GT box, not the per-image mean (0.75 + 0)/2
    assert m.precision50 == pytest.approx(0.5) and m.recall50 == pytest.approx(2 / 3)
    assert m.f1_50 == pytest.approx(4 / 7)
    assert m.count_acc == pytest.approx(0.5) and m.boxes_per_image == pytest.approx(2.0)


def test_no_prediction_anywhere_gives_zero_precision_not_nan():
    m = summarize([_g([(0.0, 0.0, 10.0, 10.0)])], score_images([_g([(0.0, 0.0, 10.0, 10.0)])], ["no lesion"]))
    assert (m.precision50, m.recall50, m.f1_50, m.boxes_per_image, m.count_acc) == (0.0, 0.0, 0.0, 0.0, 0.0)
