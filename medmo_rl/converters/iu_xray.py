"""IU-Xray / Open-i chest X-ray reports (NLMCXR_reports.tgz of ecgen-radiology/<n>.xml).

Input: <src>/NLMCXR_reports.tgz, read member by member without unpacking (or a folder of the
XMLs: <src>/ecgen-radiology/*.xml). Each XML has <uId id="CXRn">, <AbstractText Label=
"COMPARISON|INDICATION|FINDINGS|IMPRESSION"> and <parentImage id="CXRn_IM-xxxx-xxxx"> (names
of the PNGs in the separate NLMCXR_png archive).

Decision — the shipped copy has reports but no images, and a `report` sample needs its images:
  mode "report" (default): one `report` sample per report with non-empty FINDINGS,
      prompt = REPORT_PROMPT, answer = "Findings: <F>\\nImpression: <I>" (impression line only
      when present), images = <images_dir>/<parentImage id>.png for every referenced view.
      Without images on disk the report is rejected as image_missing (so the reports-only copy
      yields 0 samples and 3425 image_missing rejects — counted, not hidden).
  mode "text": one `text_qa` sample per report with FINDINGS and IMPRESSION — summarise the
      findings into the impression (the paper's stage-3 "report summarization"); no images.
Report text is kept verbatim, including Open-i's "XXXX" de-identification tokens (the CC BY-NC-ND
licence asks for no derivatives; only whitespace is collapsed).
Counts: reports, reports:findings, reports:impression, image_refs.
"""
from __future__ import annotations

import io
import os
import re
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import IO, Iterator

from medmo_rl.converters.common import ConversionReport, collect, read_image_size
from medmo_rl.schema import Sample

SOURCE = "iu_xray"
MODES = ("report", "text")
REPORT_PROMPT = "Write the findings and impression of the radiology report for this chest X-ray."
SUMMARY_PROMPT = "Summarize these chest X-ray findings into the impression of the report.\nFindings: {findings}"
_SPACE = re.compile(r"\s+")


def _clean(text: str | None) -> str:
    return _SPACE.sub(" ", text or "").strip()


def _iter_xml(src: Path, report: ConversionReport) -> Iterator[tuple[str, IO[bytes] | Path]]:
    """(name, file object or path) of every report XML; a truncated archive is reported."""
    archive = src / "NLMCXR_reports.tgz"
    if archive.is_file():
        try:
            with tarfile.open(archive, "r:gz") as tf:  # streams: one member in memory at a time
                for member in tf:
                    if member.isfile() and member.name.endswith(".xml"):
                        f = tf.extractfile(member)
                        if f is not None:
                            yield member.name, io.BytesIO(f.read())  # a truncated member fails here
        except (tarfile.TarError, EOFError, OSError) as exc:
            report.reject(archive.name, "unreadable_archive",
                          f"stopped after {report.counts['reports']} reports: {exc}")
        return
    folder = src / "ecgen-radiology" if (src / "ecgen-radiology").is_dir() else src
    files = sorted(folder.glob("*.xml"), key=lambda p: (len(p.stem), p.stem))
    if not files:
        report.reject(str(src), "file_missing", "no NLMCXR_reports.tgz and no *.xml")
    for path in files:
        yield f"{folder.name}/{path.name}", path


def iter_samples(src_dir: str | os.PathLike, report: ConversionReport, *, mode: str = "report",
                 images_dir: str | os.PathLike | None = None) -> Iterator[Sample]:
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}; allowed: {', '.join(MODES)}")
    src = Path(src_dir).resolve()
    img_root = Path(images_dir).resolve() if images_dir else src / "images"
    for where, f in _iter_xml(src, report):
        report.counts["reports"] += 1
        try:
            root = ET.parse(f).getroot()
        except ET.ParseError as exc:
            report.reject(where, "unparseable_xml", str(exc))
            continue
        uid = root.find("uId")
        rid = uid.get("id") if uid is not None and uid.get("id") else Path(where).stem
        sections = {el.get("Label", "").upper(): _clean(el.text) for el in root.iter("AbstractText")}
        findings, impression = sections.get("FINDINGS", ""), sections.get("IMPRESSION", "")
        image_ids = [el.get("id") for el in root.iter("parentImage") if el.get("id")]
        report.counts["image_refs"] += len(image_ids)
        report.counts["reports:findings"] += bool(findings)
        report.counts["reports:impression"] += bool(impression)
        where = f"{where} ({rid})"
        if not findings:
            report.reject(where, "no_findings", "FINDINGS is empty or absent")
            continue
        if mode == "text":
            if not impression:
                report.reject(where, "no_impression", "IMPRESSION is empty or absent")
                continue
            record = {"id": f"{SOURCE}-{rid}-summary", "task": "text_qa",
                      "prompt": SUMMARY_PROMPT.format(findings=findings), "answer": impression, "source": SOURCE}
        else:
            if not image_ids:
                report.reject(where, "image_missing", "the report references no image")
                continue
            paths = [img_root / f"{i}.png" for i in image_ids]
            missing = [p for p in paths if not p.is_file()]
            if missing:
                report.reject(where, "image_missing", f"{len(missing)} of {len(paths)} views, e.g. {missing[0]}"
                              + ("" if images_dir else " (reports-only copy: pass images_dir)"))
                continue
            size, problem = read_image_size(paths[0])
            if problem:
                report.reject(where, *problem)
                continue
            answer = f"Findings: {findings}" + (f"\nImpression: {impression}" if impression else "")
            record = {"id": f"{SOURCE}-{rid}", "task": "report", "prompt": REPORT_PROMPT, "answer": answer,
                      "images": [str(p) for p in paths], "image_size": list(size), "source": SOURCE}
        sample = report.make_sample(where, record)
        if sample is not None:
            yield sample


def convert(src_dir: str | os.PathLike, *, mode: str = "report",
            images_dir: str | os.PathLike | None = None) -> ConversionReport:
    return collect(iter_samples, src_dir, mode=mode, images_dir=images_dir)
