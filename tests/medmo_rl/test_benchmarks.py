"""Scoring half of the eval harness (pure): hand-checked numbers on tiny made-up benchmarks."""
import pytest

from medmo_rl.benchmarks import BenchResult, markdown_table, score_benchmark, write_overlays
from medmo_rl.schema import Sample


def _g(i, box, img="", label="nodule"):
    return Sample(id=f"g{i}", task="grounding", prompt="Locate the lesion.", answer="", images=(img,),
                  boxes=(box,), labels=(label,), image_size=(100, 100))


def test_grounding_iou_is_computed_in_pixels_from_0_1000_output():
    s = [_g(0, (10.0, 10.0, 30.0, 30.0)), _g(1, (0.0, 0.0, 50.0, 50.0))]
    comps = ["<answer>\nnodule <box>[[100, 100, 300, 300]]</box>\n</answer>",  # exact: IoU 1
             "nodule <box>[[0, 0, 250, 500]]</box>"]  # 25x50 inside 50x50: IoU 0.5
    m = score_benchmark(s, comps)
    assert m["grounding/mean_iou"] == pytest.approx(0.75)
    assert m["grounding/parse_rate"] == 1.0
    assert m["grounding/map50"] == pytest.approx(1.0)  # both are TP at IoU >= 0.5
    assert m["grounding/label_accuracy"] == 1.0  # both name "nodule", as the reward's accuracy reads it
    assert (m["grounding/precision50"], m["grounding/recall50"], m["grounding/f1_50"]) == (1.0, 1.0, 1.0)
    assert (m["grounding/count_acc"], m["grounding/boxes_per_image"]) == (1.0, 1.0)


def test_engine_errors_count_as_wrong_and_invalid_boxes_are_dropped():
    s = [_g(0, (10.0, 10.0, 30.0, 30.0)), _g(1, (10.0, 10.0, 30.0, 30.0))]
    m = score_benchmark(s, [None, "nodule <box>[[300, 300, 100, 100]]</box>"])
    assert m["grounding/mean_iou"] == 0.0
    assert m["grounding/parse_rate"] == 0.5  # the inverted box was written, so it parsed


def test_closed_open_and_report_metrics():
    closed = Sample(id="c", task="vqa", prompt="Is it?", answer="yes", images=("x",), choices=("yes", "no"))
    mcq = Sample(id="m", task="text_qa", prompt="Q", answer="B. kidney", choices=("heart", "kidney"))
    open_ = Sample(id="o", task="vqa", prompt="What?", answer="left lung", images=("x",))
    rep = Sample(id="r", task="report", prompt="Findings?", answer="no acute disease", images=("x",))
    m = score_benchmark([closed, mcq, open_, rep], ["<answer>\nno\n</answer>", "B", "the left lung", "no acute disease"])
    assert m["closed/accuracy"] == pytest.approx(0.5)  # yes→no wrong, B right
    assert m["open/recall"] == pytest.approx(1.0) and m["open/exact_match"] == pytest.approx(1.0)
    assert m["report/rouge_l"] == pytest.approx(1.0)


def test_markdown_table_and_overlays(tmp_path):
    from PIL import Image

    img = tmp_path / "a.png"
    Image.new("RGB", (100, 100)).save(img)
    paths = write_overlays([_g(0, (10.0, 10.0, 30.0, 30.0), str(img))], ["nodule <box>[[100, 100, 300, 300]]</box>"],
                           tmp_path / "ov")
    assert len(paths) == 1 and Image.open(paths[0]).size == (200, 200)
    px = Image.open(paths[0]).getpixel((20, 40))  # left edge of both boxes: the prediction (red) is drawn last
    assert px[0] > 200 and px[1] < 50
    inverted = write_overlays([_g(0, (10.0, 10.0, 30.0, 30.0), str(img))], ["nodule <box>[[300, 300, 100, 100]]</box>"],
                              tmp_path / "inv")
    px = Image.open(inverted[0]).getpixel((20, 40))  # an invalid prediction is not drawn: the GT stays green
    assert px[1] > 200 and px[0] < 50
    # a benchmark without boxes draws nothing and leaves no empty folder behind
    text_only = Sample(id="v0", task="vqa", prompt="Is there a lesion?", answer="yes", images=(str(img),))
    assert write_overlays([text_only], ["yes"], tmp_path / "none") == [] and not (tmp_path / "none").exists()
    t = markdown_table([BenchResult("syn", 2, {"grounding/mean_iou": 0.75})])
    assert "| syn | 2 | 75.0 |" in t
