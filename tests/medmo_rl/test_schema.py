import json

import pytest

from medmo_rl.schema import SampleError, load_samples, validate_sample


def _rec(tmp_path, **kw):
    img = tmp_path / "a.png"
    img.write_bytes(b"x")
    base = dict(id="r1", task="grounding", images=[str(img)], prompt="Locate.", answer="",
                boxes=[[1, 2, 10, 20]], labels=["nodule"], image_size=[64, 64], source="t")
    base.update(kw)
    return base


def test_valid_record(tmp_path):
    s = validate_sample(_rec(tmp_path))
    assert s.boxes == ((1.0, 2.0, 10.0, 20.0),) and s.image_size == (64, 64) and s.labels == ("nodule",)


@pytest.mark.parametrize("change, field, problem", [
    (dict(images=["/nonexistent/x.png"]), "images", "not found"),
    (dict(boxes=[[10, 2, 10, 20]]), "boxes[0]", "degenerate"),
    (dict(boxes=[[1, 2, 70, 20]]), "boxes[0]", "outside the 64x64"),
    (dict(boxes=[[-1, 2, 10, 20]]), "boxes[0]", "outside"),
    (dict(boxes=[[1, 2, 10]]), "boxes[0]", "4 finite numbers"),
    (dict(boxes=[[1, 2, float("nan"), 20]]), "boxes[0]", "4 finite numbers"),
    (dict(task="segmentation"), "task", "unknown task 'segmentation'"),
    (dict(labels=[]), "labels", "0 labels for 1 boxes"),
    (dict(image_size=None), "image_size", "required"),
    (dict(prompt=""), "prompt", "empty"),
    (dict(extra=1), "extra", "unknown field"),
    (dict(boxes=[]), "boxes", "at least one box"),
])
def test_bad_records_name_id_field_and_problem(tmp_path, change, field, problem):
    with pytest.raises(SampleError) as exc:
        validate_sample(_rec(tmp_path, **change))
    e = exc.value
    assert e.record_id == "r1" and e.field_name == field and problem in e.problem
    assert "'r1'" in str(e) and field in str(e)


def test_unknown_task_error_lists_allowed(tmp_path):
    with pytest.raises(SampleError, match="allowed: caption, vqa, report, grounding, text_qa"):
        validate_sample(_rec(tmp_path, task="x"))


def test_load_counts_and_reports_rejects(tmp_path):
    good = _rec(tmp_path)
    lines = [json.dumps(good), json.dumps({**good, "id": "bad-box", "boxes": [[5, 5, 1, 1]]}),
             "{not json", json.dumps({**good, "id": "no-img", "images": ["missing.png"]})]
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(lines) + "\n")
    rep = load_samples(p)
    assert [s.id for s in rep.samples] == ["r1"]
    ids = [rid for rid, _ in rep.rejected]
    assert ids == ["bad-box", "d.jsonl:3", "no-img"]
    assert "degenerate" in rep.rejected[0][1] and "unparseable JSON" in rep.rejected[1][1]
    assert "1 ok, 3 rejected" in rep.summary()


def test_relative_image_paths_resolve_against_the_file(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "b.png").write_bytes(b"x")
    rec = _rec(tmp_path, images=["img/b.png"])
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps(rec) + "\n")
    rep = load_samples(p)
    assert rep.samples[0].images == (str(tmp_path / "img" / "b.png"),)
