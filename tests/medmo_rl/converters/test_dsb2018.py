import json

import numpy as np
from converter_helpers import rejects_of, write_image, write_mask

from medmo_rl.converters import dsb2018


def test_real_nuclei_counts_match_source(shared_data):
    # SOURCE.txt: 18 images, 586 instance masks; SELECTED_IDS.json has n_masks per image
    src = shared_data / "nuclei_dsb2018_stage1_subset"
    report = dsb2018.convert(src)
    assert report.rejected == []
    assert (report.counts["images"], report.counts["masks"], report.counts["boxes"]) == (18, 586, 586)
    selected = json.loads((src / "SELECTED_IDS.json").read_text())
    expected = {e["image_id"]: (e["n_masks"], tuple(e["size_wh"])) for e in selected}
    got = {s.id.removeprefix("dsb2018-"): (len(s.boxes), s.image_size) for s in report.samples}
    assert got == expected
    for s in report.samples:
        w, h = s.image_size
        assert all(0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h for x1, y1, x2, y2 in s.boxes)
        assert set(s.labels) == {"nucleus"}


def test_mask_box_is_the_pixel_extent():
    mask = np.zeros((8, 10), np.uint8)
    mask[2:5, 3:7] = 255  # rows 2..4, columns 3..6
    assert dsb2018.mask_box(mask) == (3.0, 2.0, 7.0, 5.0)
    one = np.zeros((4, 4), np.uint8)
    one[0, 3] = 255  # a single pixel at column 3, row 0
    assert dsb2018.mask_box(one) == (3.0, 0.0, 4.0, 1.0)
    assert dsb2018.mask_box(np.zeros((3, 3), np.uint8)) is None


def test_bad_masks_and_missing_image_are_reported(tmp_path):
    root = tmp_path / "stage1_train"
    good = np.zeros((16, 20), np.uint8)
    good[1:4, 2:5] = 255
    write_image(root / "img1" / "images" / "img1.png", (20, 16), "RGBA")
    write_mask(root / "img1" / "masks" / "m1.png", good)
    gray = good.copy()
    gray[10, 10] = 128  # a third value: not binary
    write_mask(root / "img1" / "masks" / "m2.png", gray)
    write_mask(root / "img1" / "masks" / "m3.png", np.zeros((16, 20), np.uint8))  # empty
    write_mask(root / "img1" / "masks" / "m4.png", np.zeros((5, 5), np.uint8))  # wrong size
    write_mask(root / "img2" / "masks" / "m1.png", good)  # image file missing
    report = dsb2018.convert(tmp_path)
    assert [s.id for s in report.samples] == ["dsb2018-img1"]
    assert report.samples[0].boxes == ((2.0, 1.0, 5.0, 4.0),)
    bad = rejects_of(report, "non_binary_mask")
    assert bad[0][0] == "img1/masks/m2.png" and "3 distinct values (0, 128, 255)" in bad[0][1]
    assert rejects_of(report, "empty_mask")[0][0] == "img1/masks/m3.png"
    assert rejects_of(report, "mask_size_mismatch")[0][0] == "img1/masks/m4.png"
    assert rejects_of(report, "image_missing")[0][0] == "img2"
    assert report.counts["images"] == 2 and report.counts["masks"] == 4 and len(report.rejected) == 4
