from converter_helpers import rejects_of, write_image

from medmo_rl.converters import bccd


def test_real_bccd_counts_match_source(shared_data):
    # SOURCE.txt: 364 images / 364 XML; boxes RBC 4155, WBC 372, Platelets 361; 2 degenerate boxes
    report = bccd.convert(shared_data / "bccd")
    assert report.counts["xml"] == 364 and len(report.samples) == 364
    per_label = tuple(report.counts[f"boxes:{k}"] for k in ("RBC", "WBC", "Platelets"))
    assert per_label == (4155, 372, 361)
    assert report.counts["boxes"] == 4888 and report.counts["boxes_kept"] == 4886
    assert sum(len(s.boxes) for s in report.samples) == 4886
    assert report.rejected == [
        ("BloodImage_00338.xml#object12", "degenerate_box: RBC VOC corners [504.0, 337.0, 504.0, 337.0]"),
        ("BloodImage_00343.xml#object3", "degenerate_box: RBC VOC corners [181.0, 329.0, 181.0, 329.0]"),
    ]
    first = report.samples[0]
    # BloodImage_00000.xml, first object: WBC xmin=260 ymin=177 xmax=491 ymax=376 (1-based inclusive)
    assert first.id == "bccd-BloodImage_00000" and first.image_size == (640, 480)
    assert first.boxes[0] == (259.0, 176.0, 491.0, 376.0) and first.labels[0] == "WBC"
    assert first.answer.startswith("WBC <box>[[405, 367, 767, 783]]</box>; RBC <box>")  # 259/640*1000 = 404.7
    assert max(b[2] for s in report.samples for b in s.boxes) == 640.0  # xmax=640 is the last column


def test_real_bccd_splits(shared_data):
    # SOURCE.txt: train 205, val 87, test 72
    sizes = {split: len(bccd.convert(shared_data / "bccd", split=split).samples) for split in ("train", "val", "test")}
    assert sizes == {"train": 205, "val": 87, "test": 72}


def test_voc_inclusive_corners_to_pixel_edges():
    # a 1-pixel VOC box at column 5, row 7 (1-based) covers [4, 5) x [6, 7) in 0-based edges
    assert bccd.voc_to_pixels(5, 7, 5, 7) == (4.0, 6.0, 5.0, 7.0)
    assert bccd.voc_to_pixels(1, 1, 640, 480) == (0.0, 0.0, 640.0, 480.0)  # the whole 640x480 image


def _voc(filename, size, objects):
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax>"
        f"</bndbox></object>" for n, (a, b, c, d) in objects)
    return (f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width><height>{size[1]}"
            f"</height><depth>3</depth></size>{objs}</annotation>")


def test_bad_inputs_are_reported_with_file_and_object(tmp_path):
    root = tmp_path / "BCCD"
    ann = root / "Annotations"
    ann.mkdir(parents=True)
    write_image(root / "JPEGImages" / "a.jpg", (64, 48))
    write_image(root / "JPEGImages" / "c.jpg", (64, 48))
    write_image(root / "JPEGImages" / "d.jpg", (50, 50))
    (ann / "a.xml").write_text(_voc("a.jpg", (64, 48), [
        ("RBC", (1, 1, 10, 10)),      # fine
        ("WBC", (30, 20, 70, 40)),    # xmax 70 > 64: outside the image
        ("RBC", (9, 9, 9, 12)),       # degenerate
    ]))
    (ann / "b.xml").write_text(_voc("b.jpg", (64, 48), [("RBC", (1, 1, 5, 5))]))  # JPEG missing
    (ann / "c.xml").write_text(_voc("c.jpg", (64, 48), [("RBC", (1, 1, 5, 5))])[:70])  # truncated XML
    (ann / "d.xml").write_text(_voc("d.jpg", (64, 48), [("RBC", (1, 1, 5, 5))]))  # JPEG is 50x50
    report = bccd.convert(tmp_path)
    assert [s.id for s in report.samples] == ["bccd-a"]
    assert report.samples[0].boxes == ((0.0, 0.0, 10.0, 10.0),)
    assert rejects_of(report, "box_outside_image")[0][0] == "a.xml#object1"
    assert rejects_of(report, "degenerate_box")[0][0] == "a.xml#object2"
    assert rejects_of(report, "image_missing")[0][0] == "b.xml"
    assert rejects_of(report, "unparseable_xml")[0][0] == "c.xml"
    assert rejects_of(report, "size_mismatch")[0][0] == "d.xml"
    assert len(report.rejected) == 5 and report.counts["xml"] == 4
    assert all(report.counts[f"rejected:{k}"] == 1 for k in
               ("box_outside_image", "degenerate_box", "image_missing", "unparseable_xml", "size_mismatch"))
