import gzip

from converter_helpers import rejects_of, write_image

from medmo_rl.converters import nih_cxr14

HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"  # the original, malformed header


def test_real_nih_boxes_without_images_are_reported_not_raised(shared_data):
    # SOURCE.txt: 984 boxes on 880 images; Atelectasis 180, Effusion 153, Cardiomegaly 146,
    # Infiltrate 123, Pneumonia 120, Pneumothorax 98, Mass 85, Nodule 79; no images shipped
    report = nih_cxr14.convert(shared_data / "nih_cxr14_bbox_annotations_only")
    assert (report.counts["rows"], report.counts["boxes"], report.counts["images"]) == (984, 984, 880)
    per_label = {k.removeprefix("boxes:"): v for k, v in report.counts.items() if k.startswith("boxes:")}
    assert per_label == {"Atelectasis": 180, "Effusion": 153, "Cardiomegaly": 146, "Infiltrate": 123,
                         "Pneumonia": 120, "Pneumothorax": 98, "Mass": 85, "Nodule": 79}
    assert report.samples == []
    assert report.counts["rejected:image_missing"] == 880 == len(report.rejected)  # header is no bad row
    assert report.rejected[0][0] == "00013118_008.png" and "1 boxes" in report.rejected[0][1]


def test_with_images_boxes_are_xywh_in_1024_space_and_scaled(tmp_path):
    src = tmp_path / "ann"
    src.mkdir()
    with gzip.open(src / "BBox_List_2017.csv.gz", "wt") as f:
        f.write(HEADER)
        f.write("a.png,Mass,100.5,200,50,25\n")
        f.write("b.png,Nodule,512,512,64,64\n")
        f.write("a.png,Nodule,10,20,30,40\n")
        f.write("a.png,Effusion,1000,0,100,10\n")   # x + w = 1100 > 1024: outside
        f.write("b.png,Mass,abc,1,2,3\n")            # not a number
        f.write("c.png,Mass,1,1,2,2\n")              # image missing
    images = tmp_path / "png"
    write_image(images / "a.png", (1024, 1024), "L")
    write_image(images / "b.png", (512, 512), "L")  # a downsized copy: boxes scale by 0.5
    report = nih_cxr14.convert(src, images_dir=images)
    a, b = report.samples
    assert a.id == "nih_cxr14-a" and a.image_size == (1024, 1024)
    assert a.boxes == ((100.5, 200.0, 150.5, 225.0), (10.0, 20.0, 40.0, 60.0)) and a.labels == ("Mass", "Nodule")
    assert a.prompt == "Locate the following findings in this chest X-ray: Mass, Nodule."
    assert b.boxes == ((256.0, 256.0, 288.0, 288.0),) and b.image_size == (512, 512)
    assert rejects_of(report, "box_outside_image")[0][0] == "BBox_List_2017.csv:5 (a.png)"
    assert rejects_of(report, "bad_row")[0][0] == "BBox_List_2017.csv:6"
    assert rejects_of(report, "image_missing")[0][0] == "c.png"
    assert report.counts["rows"] == 6 and len(report.rejected) == 3


def test_truncated_gzip_is_reported(tmp_path):
    data = gzip.compress((HEADER + "a.png,Mass,1,2,3,4\n" * 200).encode())
    (tmp_path / "BBox_List_2017.csv.gz").write_bytes(data[: len(data) // 2])
    report = nih_cxr14.convert(tmp_path)
    assert report.counts["rejected:unreadable_file"] == 1
