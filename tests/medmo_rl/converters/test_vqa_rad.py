import json

from converter_helpers import rejects_of, write_image

from medmo_rl.converters import vqa_rad


def test_real_vqa_rad_counts_match_source(shared_data):
    # SOURCE.txt: 451 QA (272 CLOSED / 179 OPEN), 203 images
    report = vqa_rad.convert(shared_data / "vqa_rad_test")
    assert report.rejected == []
    assert (report.counts["qa"], report.counts["qa:closed"], report.counts["qa:open"]) == (451, 272, 179)
    assert report.counts["images"] == 203
    assert len(report.samples) == 451
    assert len({s.images[0] for s in report.samples}) == 203
    first = report.samples[0]  # {"qid": 11, "image_name": "synpic42202.jpg", "answer": "yes", CLOSED}
    assert (first.id, first.task, first.answer, first.choices) == ("vqa_rad-11", "vqa", "yes", ("yes", "no"))
    assert first.source == "vqa_rad/closed" and first.images[0].endswith("data/images/synpic42202.jpg")
    assert all(s.image_size and min(s.image_size) > 0 for s in report.samples)
    closed = [s for s in report.samples if s.source == "vqa_rad/closed"]
    # 133 "no" + 118 "yes" (any case) among the closed answers get the yes/no choices
    assert sum(s.choices == ("yes", "no") for s in closed) == 251
    assert not any(s.choices for s in report.samples if s.source == "vqa_rad/open")


def _write_split(root, items):
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "testset.json").write_text(json.dumps(items))


def test_missing_image_and_bad_records_are_reported(tmp_path):
    write_image(tmp_path / "data" / "images" / "ok.jpg", (40, 30))
    base = {"image_organ": "CHEST", "question_type": "PRES", "phrase_type": "freeform", "question": "Is it?"}
    _write_split(tmp_path, [
        {**base, "qid": 1, "image_name": "ok.jpg", "answer": "Yes", "answer_type": "CLOSED"},
        {**base, "qid": 2, "image_name": "gone.jpg", "answer": "no", "answer_type": "CLOSED"},
        {**base, "qid": 3, "image_name": "gone.jpg", "answer": "left lung", "answer_type": "OPEN"},
        {**base, "qid": 4, "image_name": "ok.jpg", "answer": "x", "answer_type": "MAYBE"},
        {**base, "qid": 5, "image_name": "ok.jpg", "answer": " left lung ", "answer_type": "OPEN"},
    ])
    report = vqa_rad.convert(tmp_path)
    assert [s.id for s in report.samples] == ["vqa_rad-1", "vqa_rad-5"]
    assert report.samples[0].answer == "yes" and report.samples[0].image_size == (40, 30)
    assert report.samples[1].answer == "left lung" and report.samples[1].choices == ()
    missing = rejects_of(report, "image_missing")
    assert [w for w, _ in missing] == ["testset.json#1", "testset.json#2"]  # every QA of the image
    assert "gone.jpg" in missing[0][1]
    assert rejects_of(report, "invalid_record")[0][0] == "testset.json#3"
    assert report.counts["rejected:image_missing"] == 2 and report.counts["qa"] == 5


def test_truncated_json_is_reported_not_raised(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "testset.json").write_text('[{"qid": 1, "image_name": "a.jpg", "answ')
    report = vqa_rad.convert(tmp_path)
    assert report.samples == [] and report.counts["rejected:unparseable_json"] == 1
    assert report.rejected[0][0].endswith("testset.json")
