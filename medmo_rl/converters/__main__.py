"""python -m medmo_rl.converters <name> --src DIR --out DIR [--split S] [--images-dir D] [--mode M]

Streams the converter's samples into OUT/samples.jsonl and OUT/hf/ (HF Arrow), writes every count
and reject to OUT/report.json, and prints the counts and the first rejects.
Example: python -m medmo_rl.converters bccd --src ../shared/data/bccd --out runs/data/bccd
"""
from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

from tqdm import tqdm

from medmo_rl.converters import CONVERTERS
from medmo_rl.converters.common import ConversionReport, write_dataset, write_report

OPTIONS = ("split", "images_dir", "mode", "filename")  # converter keywords the CLI can pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medmo_rl.converters", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(CONVERTERS))
    parser.add_argument("--src", required=True, help="folder of the dataset in its original format")
    parser.add_argument("--out", required=True, help="output folder (samples.jsonl, hf/, report.json)")
    parser.add_argument("--split", help="bccd: all|train|val|test|trainval; pubmedqa: test|train|all; "
                                          "vqa_rad: test|train")
    parser.add_argument("--images-dir", dest="images_dir", help="nih_cxr14, iu_xray: folder of the images")
    parser.add_argument("--mode", help="iu_xray: report|text")
    parser.add_argument("--filename", help="medqa: the JSONL file inside --src")
    parser.add_argument("--show-rejects", type=int, default=10, help="how many rejects to print")
    args = parser.parse_args(argv)

    module = CONVERTERS[args.name]
    accepted = inspect.signature(module.iter_samples).parameters
    options = {k: getattr(args, k) for k in OPTIONS if getattr(args, k) is not None}
    for key in options:
        if key not in accepted:
            parser.error(f"converter {args.name!r} takes no --{key.replace('_', '-')}")
    if not Path(args.src).is_dir():
        parser.error(f"--src {args.src}: not a folder")

    import datasets

    datasets.disable_progress_bars()  # ours below is the one that counts samples
    report = ConversionReport()
    stream = tqdm(module.iter_samples(args.src, report, **options), desc=args.name, unit=" samples", file=sys.stderr)
    try:
        written = write_dataset(stream, args.out)
    except ValueError as exc:  # a bad option value (--split, --mode), raised on the first sample
        parser.error(str(exc))
    write_report(report, Path(args.out) / "report.json")
    print(f"{args.name}: wrote {written['n']} samples to {written['jsonl']} and {written['hf']}")
    print(report.summary(max_rejects=args.show_rejects))
    print(f"all rejects: {Path(args.out) / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
