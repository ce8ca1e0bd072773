import json

import datasets
from converter_helpers import write_image

from medmo_rl.converters import write_dataset
from medmo_rl.converters.__main__ import main
from medmo_rl.schema import Sample, load_samples


def _samples(tmp_path):
    img = str(write_image(tmp_path / "img" / "a.png", (40, 30)))
    return [
        Sample(id="g1", task="grounding", prompt="Locate.", answer="x <box>[[0, 0, 250, 333]]</box>",
               images=(img,), boxes=((0.0, 0.0, 10.0, 10.0),), labels=("x",), image_size=(40, 30), source="t"),
        Sample(id="q1", task="text_qa", prompt="Q?", answer="B. two", choices=("one", "two"), source="t"),
    ]


def test_write_dataset_jsonl_and_arrow_round_trip(tmp_path):
    samples = _samples(tmp_path)
    out = write_dataset(iter(samples), tmp_path / "out")
    assert out["n"] == 2
    loaded = load_samples(out["jsonl"])
    assert loaded.rejected == [] and loaded.samples == samples
    rows = datasets.load_from_disk(str(out["hf"])).to_list()
    assert rows == [s.to_json() for s in samples]
    assert not (tmp_path / "out" / ".hf_cache").exists()


def test_write_dataset_with_no_samples_still_loads(tmp_path):
    out = write_dataset([], tmp_path / "empty")
    assert out["n"] == 0 and out["jsonl"].read_text() == ""
    assert len(datasets.load_from_disk(str(out["hf"]))) == 0


def test_cli_writes_dataset_report_and_prints_summary(tmp_path, capsys):
    good = {"question": "Q?", "answer": "two", "options": {"A": "one", "B": "two", "C": "3", "D": "4"},
            "meta_info": "step1", "answer_idx": "B"}
    src = tmp_path / "medqa"
    src.mkdir()
    (src / "phrases_no_exclude_test.jsonl").write_text(json.dumps(good) + "\nnot json\n")
    assert main(["medqa", "--src", str(src), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "wrote 1 samples" in printed
    assert "questions=2" in printed and "rejected:unparseable_json=1" in printed
    assert "phrases_no_exclude_test.jsonl:2: unparseable_json" in printed
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["counts"]["samples"] == 1 and report["rejected"][0]["where"] == "phrases_no_exclude_test.jsonl:2"
    assert len(load_samples(tmp_path / "out" / "samples.jsonl").samples) == 1
