"""Write unified records as OpenRLHF-ready prompt JSONL, the reference in a `label` column.

    python -m rewards.prompt_data data/synthetic/grounding.jsonl --out data/openrlhf/grounding.jsonl \\
        [--tasks grounding,vqa] [--answer-format think_answer]

One line per record:
    {"input": [{"role": "system", "content": "Think inside ..."}, {"role": "user", "content": "<image>Locate ..."}],
     "images": ["/abs/path/img.png"], "label": "<reference record JSON>", "datasource": "synthetic"}

read by OpenRLHF with `--data.input_key input --data.label_key label --data.image_key images
--data.apply_chat_template` (older releases: `--input_key input --label_key label
--apply_chat_template`): its prompt dataset turns each "<image>" into an image part of the chat
message and sends `label` back to `/get_reward` untouched. The user text is `medmo_rl.prompts`'
(MCQ choices listed as in SFT and our own RL), the system message the one of the answer format.
Image paths are written absolute so the file can move. Records that fail the schema are
reported and skipped, never silently.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable

from medmo_rl.prompts import ANSWER_FORMATS, THINK_ANSWER_SYSTEM, user_text
from medmo_rl.schema import TASKS, Sample, load_samples

from rewards.labels import encode_label

IMAGE_TAG = "<image>"  # OpenRLHF's placeholder for one image in a string message (prompts_dataset.py)


def prompt_row(sample: Sample, answer_format: str = "think_answer") -> dict[str, Any]:
    """The OpenRLHF prompt row of one record (module docstring)."""
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer_format {answer_format!r}; allowed: {', '.join(ANSWER_FORMATS)}")
    messages = []
    if answer_format == "think_answer":
        messages.append({"role": "system", "content": THINK_ANSWER_SYSTEM})
    messages.append({"role": "user", "content": IMAGE_TAG * len(sample.images) + user_text(sample)})
    return {"input": messages, "images": [os.path.abspath(p) for p in sample.images],
            "label": encode_label(sample), "datasource": sample.source or "medmo"}


def write_prompt_jsonl(samples: Iterable[Sample], out: str | os.PathLike, *, answer_format: str = "think_answer") -> int:
    """Write the rows atomically; returns how many."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(prompt_row(s, answer_format), ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, out)
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rewards.prompt_data", description=__doc__.split("\n")[0])
    p.add_argument("src", nargs="+", help="unified-record JSONL files (medmo_rl/schema.py)")
    p.add_argument("--out", required=True, help="the OpenRLHF prompt JSONL to write")
    p.add_argument("--tasks", default="", help=f"comma-separated subset of {','.join(TASKS)} (default: all)")
    p.add_argument("--answer-format", default="think_answer", choices=ANSWER_FORMATS)
    args = p.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        p.error(f"--tasks: unknown task {bad[0]!r}; allowed: {', '.join(TASKS)}")
    samples: list[Sample] = []
    for src in args.src:
        report = load_samples(src)
        print(f"{src}: {report.summary()}", file=sys.stderr)
        samples += [s for s in report.samples if not tasks or s.task in tasks]
    n = write_prompt_jsonl(samples, args.out, answer_format=args.answer_format)
    print(f"wrote {n} prompts to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
