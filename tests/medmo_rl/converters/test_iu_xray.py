import io
import tarfile

from converter_helpers import rejects_of, write_image

from medmo_rl.converters import iu_xray


def _report_xml(uid, findings, impression, images):
    parts = [f'<AbstractText Label="FINDINGS">{findings}</AbstractText>' if findings is not None else "",
             f'<AbstractText Label="IMPRESSION">{impression}</AbstractText>']
    imgs = "".join(f'<parentImage id="{i}"><caption>x</caption></parentImage>' for i in images)
    return (f'<?xml version="1.0" encoding="utf-8"?><eCitation><uId id="{uid}"/><MedlineCitation><Article>'
            f'<Abstract>{"".join(parts)}</Abstract></Article></MedlineCitation>{imgs}</eCitation>')


def test_real_reports_only_copy(shared_data):
    # SOURCE.txt: 3955 reports, 3425 with non-empty FINDINGS, 7470 parentImage references; no images
    src = shared_data / "iu_xray_openi_reports_only"
    report = iu_xray.convert(src)
    counts = report.counts
    assert (counts["reports"], counts["reports:findings"], counts["image_refs"]) == (3955, 3425, 7470)
    assert report.samples == []  # every report with findings needs its (absent) images
    assert (counts["rejected:image_missing"], counts["rejected:no_findings"]) == (3425, 530)
    assert report.rejected[0][0] == "ecgen-radiology/1.xml (CXR1)"

    text = iu_xray.convert(src, mode="text")
    # 3425 with findings, 6 of them without an impression -> 3419 summarisation samples
    assert len(text.samples) == 3419 and text.counts["rejected:no_impression"] == 6
    assert len(text.samples) + len(text.rejected) == 3955
    cxr1 = next(s for s in text.samples if s.id == "iu_xray-CXR1-summary")
    assert cxr1.task == "text_qa" and cxr1.answer == "Normal chest x-XXXX."  # verbatim, XXXX kept
    assert "There is no evidence of pneumothorax." in cxr1.prompt


def test_report_samples_from_xml_folder_with_images(tmp_path):
    folder = tmp_path / "ecgen-radiology"
    folder.mkdir()
    (folder / "1.xml").write_text(
        _report_xml("CXR1", "Heart  normal.\n  Lungs clear.", "Normal.", ["CXR1_a", "CXR1_b"]))
    (folder / "2.xml").write_text(_report_xml("CXR2", "Effusion.", "", ["CXR2_a"]))
    (folder / "3.xml").write_text(_report_xml("CXR3", "Cut", "off", ["CXR3_a"])[:90])  # truncated
    (folder / "4.xml").write_text(_report_xml("CXR4", None, "Only impression.", ["CXR4_a"]))
    (folder / "5.xml").write_text(_report_xml("CXR5", "Nodule.", "Nodule.", ["CXR5_a"]))  # image absent
    images = tmp_path / "png"
    for name in ("CXR1_a", "CXR1_b", "CXR2_a"):
        write_image(images / f"{name}.png", (30, 20), "L")
    report = iu_xray.convert(tmp_path, images_dir=images)
    one, two = report.samples
    assert one.task == "report" and one.answer == "Findings: Heart normal. Lungs clear.\nImpression: Normal."
    assert [p.rsplit("/", 1)[1] for p in one.images] == ["CXR1_a.png", "CXR1_b.png"] and one.image_size == (30, 20)
    assert two.answer == "Findings: Effusion."  # no impression line when there is none
    assert rejects_of(report, "unparseable_xml")[0][0] == "ecgen-radiology/3.xml"
    assert rejects_of(report, "no_findings")[0][0] == "ecgen-radiology/4.xml (CXR4)"
    assert rejects_of(report, "image_missing")[0][0] == "ecgen-radiology/5.xml (CXR5)"
    assert report.counts["reports"] == 5 and len(report.rejected) == 3


def test_truncated_archive_is_reported(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for n in range(1, 40):
            data = _report_xml(f"CXR{n}", "Clear lungs. " * 50, "Normal.", []).encode()
            info = tarfile.TarInfo(f"ecgen-radiology/{n}.xml")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    (tmp_path / "NLMCXR_reports.tgz").write_bytes(raw[: len(raw) * 2 // 3])
    report = iu_xray.convert(tmp_path, mode="text")
    assert report.counts["rejected:unreadable_archive"] == 1
    assert 0 < len(report.samples) < 39 and report.counts["reports"] == len(report.samples)
