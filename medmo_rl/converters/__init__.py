"""Converters from original medical dataset formats into `schema.Sample` records.

One module per format; each has `iter_samples(src_dir, report, **options)` (streaming) and
`convert(src_dir, **options) -> ConversionReport`. `write_dataset` writes JSONL + HF Arrow.
CLI: python -m medmo_rl.converters <name> --src DIR --out DIR   (see __main__.py)
"""
from medmo_rl.converters import bccd, dsb2018, iu_xray, medqa, nih_cxr14, pubmedqa, vqa_rad
from medmo_rl.converters.common import ConversionReport, write_dataset, write_report

CONVERTERS = {
    "vqa_rad": vqa_rad,
    "bccd": bccd,
    "dsb2018": dsb2018,
    "nih_cxr14": nih_cxr14,
    "iu_xray": iu_xray,
    "pubmedqa": pubmedqa,
    "medqa": medqa,
}

__all__ = ["CONVERTERS", "ConversionReport", "write_dataset", "write_report"]
