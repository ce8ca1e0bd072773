"""The paper's Table 4 in miniature: RL variants on ONE SFT checkpoint, one command, one table.

    python -m medmo_rl.ablate                          # tiny default → docs/ablations.md
    python -m medmo_rl.ablate --rows full,no_rl seed=7 # a subset, with overrides for every row

The SFT stages run once, in the base run directory `<output_dir>/<name>` (so a finished `make run`
is reused as is); every row then gets its own run directory `<output_dir>/<name>-ablate-<row>`
whose `base/`, `data/` and `sft/` are links to the base run's, and runs `python -m medmo_rl.run
--stages stage4,eval` with the row's overrides (the "no RL" row evaluates the SFT model only). The
rows differ from the recipe only in what the row names, and share the seed, so the rollouts differ
only through what the variant changes. The table reads each row's summary.json; the recipe's own
rows (RL with all parts, no RL) come from the base run's summary.json when it has them.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from medmo_rl.config import load_config

BENCHMARK = "synthetic_eval_grounding"
COLUMNS = ("f1_50", "precision50", "recall50", "mean_iou", "count_acc", "boxes_per_image", "map50", "parse_rate")


@dataclass(frozen=True)
class Row:
    key: str
    title: str
    overrides: tuple[str, ...]
    rl: bool = True


ROWS = (
    Row("full", "RL, all four parts (the recipe)", ()),
    Row("no_bbox", "RL without the box reward (reward.w_bbox=0)", ("reward.w_bbox=0",)),
    Row("no_penalty", "RL, box reward with λ_FN = λ_FP = 0 (the paper's default)",
        ("reward.bbox.lambda_fn=0", "reward.bbox.lambda_fp=0")),
    Row("square", "RL, box reward squared (Sec. 3.5.1) instead of eq. 12", ("reward.bbox.square=true",)),
    Row("no_rl", "no RL (the SFT checkpoint)", (), rl=False),
)


def _run(cmd: list[str], log: Path) -> None:
    print(f"$ {' '.join(cmd)}   (log: {log})", flush=True)
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    if proc.returncode:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}; last lines of {log}:\n{tail}")


def _link_base(base: Path, row_dir: Path) -> None:
    row_dir.mkdir(parents=True, exist_ok=True)
    for name in ("base", "data", "sft"):
        link = row_dir / name
        if not link.exists():
            link.symlink_to((base / name).resolve(), target_is_directory=True)


def run_rows(config: str | None, overrides: list[str], rows: list[Row]) -> tuple[dict[str, dict[str, float]], dict]:
    cfg = load_config(config, overrides)
    base = Path(cfg.output_dir).resolve() / cfg.name
    py = [sys.executable, "-m", "medmo_rl.run"] + (["--config", config] if config else [])
    logs = Path(cfg.output_dir).resolve() / f"{cfg.name}-ablate-logs"
    logs.mkdir(parents=True, exist_ok=True)
    if not (base / "sft" / "stage3" / "final" / "DONE").exists():
        _run(py + ["--stages", "stage1,stage2,stage3", *overrides], logs / "sft.log")
    results: dict[str, dict[str, float]] = {}
    seconds: dict[str, float | None] = {}  # None: read from the base run, not rerun
    base_summary = base / "summary.json"
    base_evals = json.loads(base_summary.read_text())["evals"] if base_summary.exists() else {}
    for row in rows:
        model = "rl" if row.rl else "sft"
        if not row.overrides and model in base_evals:  # the recipe itself: the base run already has its eval
            print(f"{row.key}: from {base_summary}", flush=True)
            results[row.key] = {c: base_evals[model][f"{BENCHMARK}:grounding/{c}"] for c in COLUMNS}
            seconds[row.key] = None
            continue
        name = f"{cfg.name}-ablate-{row.key}"
        row_dir = base.parent / name
        _link_base(base, row_dir)
        stages = "stage4,eval" if row.rl else "eval"
        t = time.perf_counter()
        _run(py + ["--stages", stages, *overrides, *row.overrides, f"name={name}", f"eval.models=[{model}]",
                   f"eval.benchmarks=[{BENCHMARK}]"], logs / f"{row.key}.log")
        seconds[row.key] = time.perf_counter() - t
        evals = json.loads((row_dir / "summary.json").read_text())["evals"][model]
        results[row.key] = {c: evals[f"{BENCHMARK}:grounding/{c}"] for c in COLUMNS}
    return results, {"seconds": seconds, "base": str(base), "overrides": overrides}


def _secs(v: float | None) -> str:
    return "base run" if v is None else f"{v:.0f}"


def markdown(results: dict[str, dict[str, float]], rows: list[Row], meta: dict, command: str) -> str:
    lines = ["## The paper's Table 4 in miniature", "",
             f"Made by `{command}` on {time.strftime('%Y-%m-%d')}; SFT checkpoint: `{meta['base']}/sft/stage3/final`. "
             f"Benchmark: {BENCHMARK} (held-out, greedy). Box metrics pool over GT boxes "
             "(`medmo_rl/grounding.py`); percentages except boxes/image.", "",
             "| variant | " + " | ".join(COLUMNS) + " | seconds |", "|---|" + "---|" * (len(COLUMNS) + 1)]
    for row in rows:
        r = results[row.key]
        vals = [f"{r[c]:.2f}" if c == "boxes_per_image" else f"{100 * r[c]:.1f}" for c in COLUMNS]
        lines.append(f"| {row.title} | " + " | ".join(vals) + f" | {_secs(meta['seconds'][row.key])} |")
    return "\n".join(lines) + "\n"


TABLE_START, TABLE_END = "<!-- ablate: table -->", "<!-- ablate: end of table -->"


def splice(document: str, table: str) -> str:
    """The document with the text between its table markers replaced (written analysis around the
    table survives a rerun); a document without markers becomes the table alone."""
    block = f"{TABLE_START}\n{table}{TABLE_END}\n"
    if TABLE_START in document and TABLE_END in document:
        head, rest = document.split(TABLE_START, 1)
        return head + block + rest.split(TABLE_END, 1)[1].lstrip("\n")
    return block


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m medmo_rl.ablate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=None, help="recipe YAML (default: the tiny default)")
    ap.add_argument("--rows", default=",".join(r.key for r in ROWS),
                    help=f"comma-separated subset of {', '.join(r.key for r in ROWS)}")
    ap.add_argument("--out", default="docs/ablations.md", help="markdown table to write ('' → print only)")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides for every row, e.g. seed=7")
    args = ap.parse_args(argv)
    by_key = {r.key: r for r in ROWS}
    unknown = [k for k in args.rows.split(",") if k not in by_key]
    if unknown:
        ap.error(f"--rows: unknown {unknown}; allowed: {', '.join(by_key)}")
    rows = [by_key[k] for k in args.rows.split(",")]
    results, meta = run_rows(args.config, list(args.overrides), rows)
    text = markdown(results, rows, meta, "python -m medmo_rl.ablate " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(text)
    if args.out:
        out = Path(args.out)
        out.write_text(splice(out.read_text() if out.exists() else "", text))
        print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
