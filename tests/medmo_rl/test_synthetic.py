import numpy as np

from medmo_rl.boxes import parse_boxes, to_pixels
from medmo_rl.schema import load_samples
from medmo_rl.synthetic import make_records


def test_records_deterministic_and_boxes_match_pixels(tmp_path):
    img1, r1 = make_records(7, 0, 64, str(tmp_path / "a.png"))
    img2, r2 = make_records(7, 0, 64, str(tmp_path / "a.png"))
    assert np.array_equal(np.asarray(img1), np.asarray(img2)) and r1 == r2
    g = [r for r in r1 if r.task == "grounding"]
    if g:  # the answer's 0–1000 box maps back onto the stored pixel box within 1 px
        (box,) = parse_boxes(g[0].answer).boxes
        assert np.allclose(to_pixels(box, (64, 64)), g[0].boxes[0], atol=1.0)
        x1, y1, x2, y2 = (int(c) for c in g[0].boxes[0])
        arr = np.asarray(img1)[..., 0].astype(float)
        assert arr[y1:y2, x1:x2].mean() > arr.mean() + 20  # the lesion is bright where the box says


def test_generated_dataset_covers_every_task_and_validates(synthetic_dir):
    rep = load_samples(synthetic_dir["all"])
    assert not rep.rejected
    tasks = {s.task for s in rep.samples}
    assert tasks == {"grounding", "vqa", "caption", "report", "text_qa"}
    answers = {s.answer for s in rep.samples if s.prompt == "Is there a lesion in the image?"}
    assert answers == {"yes", "no"}


def test_kind_follows_size_and_shape_varies_within_each_kind(tmp_path):
    """"mass" iff the lesion covers > 9 % of the image; both shapes occur for both kinds, so the
    label is learnable from the pixels but not from the shape alone."""
    seen = set()
    for i in range(200):
        img, recs = make_records(i, 0, 64, str(tmp_path / f"{i}.png"))
        (g,) = [r for r in recs if r.task == "grounding"] or [None]
        if g is None:
            continue
        x1, y1, x2, y2 = g.boxes[0]
        assert g.labels[0] == ("mass" if (x2 - x1) * (y2 - y1) > 0.09 * 64 * 64 else "nodule")
        corner = np.asarray(img)[int(y1), int(x1), 0]  # a rectangle fills its corner, an ellipse does not
        seen.add((g.labels[0], bool(corner > 150)))
    assert seen == {("mass", True), ("mass", False), ("nodule", True), ("nodule", False)}
