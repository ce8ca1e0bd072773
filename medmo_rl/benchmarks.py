"""The benchmarks of the eval and how they are scored: load, score, tables, overlays (no engine here;
medmo_rl/driver/eval_runner.py generates the completions, `python -m medmo_rl.eval` runs both).

Benchmarks (Tables 1–3 style):
  synthetic_eval_grounding   held-out synthetic lesions (the tiny default's task)
  vqa_rad                    VQA-RAD test (closed accuracy, open recall / exact match)   Table 1
  bccd                       BCCD test split, blood-cell grounding (mean IoU, mAP@0.5)   Table 3 "Cell"
  nuclei                     DSB2018 nuclei subset, one box per mask                    Table 3 "Cell"
  pubmedqa                   PubMedQA official test split (yes/no/maybe accuracy)       Table 1
  medqa                      MedQA USMLE 4-option test (accuracy)                      Table 1
  iu_xray_text               IU-Xray findings → impression (ROUGE-L, BLEU, CIDEr-D)     Table 2 (text only)
  any .jsonl path            unified records; metrics chosen per task
Real data is read from --data-root (default ../shared/data). RaTE / Semb need models this machine
cannot download: they are reported as skipped, with what to supply (medmo_rl.metrics hooks).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medmo_rl import grounding
from medmo_rl import metrics as M
from medmo_rl.answers import label_accuracy, parse_completion
from medmo_rl.boxes import is_valid_box, to_pixels
from medmo_rl.config import DataConfig
from medmo_rl.converters import CONVERTERS
from medmo_rl.datasets import resolve
from medmo_rl.schema import Sample, load_samples

GROUNDING_METRICS = ("mean_iou", "precision50", "recall50", "f1_50", "count_acc", "boxes_per_image", "map50",
                     "parse_rate", "label_accuracy")  # reported as grounding/<name>; see medmo_rl.grounding
NOT_PERCENT = {"report/cider_d", "grounding/boxes_per_image"}
DEFAULT_DATA_ROOT = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
REAL = {  # benchmark → (converter, folder under the data root, converter options)
    "vqa_rad": ("vqa_rad", "vqa_rad_test", {"split": "test"}),
    "bccd": ("bccd", "bccd", {"split": "test"}),
    "nuclei": ("dsb2018", "nuclei_dsb2018_stage1_subset", {}),
    "pubmedqa": ("pubmedqa", "pubmedqa_pqal", {"split": "test"}),
    "medqa": ("medqa", "medqa_usmle_4opt_test", {}),
    "iu_xray_text": ("iu_xray", "iu_xray_openi_reports_only", {"mode": "text"}),
}


@dataclass
class BenchResult:
    name: str
    n: int
    metrics: dict[str, float] = field(default_factory=dict)
    errors: int = 0  # requests the engine refused (too long, bad image, ...)
    rejected_records: int = 0  # records the converter rejected
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


def load_benchmark(name: str, *, data_root: Path, data_cfg=None, cache_dir: Path | None = None
                   ) -> tuple[list[Sample], int]:
    """→ (samples, number of records rejected on the way)."""
    if name in REAL:
        conv, folder, opts = REAL[name]
        src = data_root / folder
        if not src.exists():
            raise FileNotFoundError(f"benchmark {name!r}: {src} not found (set --data-root)")
        rep = CONVERTERS[conv].convert(src, **opts)
        return list(rep.samples), len(rep.rejected)
    path = resolve(name, data_cfg or DataConfig(), cache_dir or Path("runs/data"))
    rep = load_samples(path)
    return rep.samples, len(rep.rejected)


def score_benchmark(samples: list[Sample], completions: list[str | None]) -> dict[str, float]:
    """Metrics per task family present in the benchmark; None completions (engine errors) count as wrong.

    grounding/*: `medmo_rl.grounding` (GROUNDING_METRICS: Hungarian IoU per GT box, precision /
    recall / F1 at IoU 0.5, count accuracy, boxes per image, mAP@0.5, parse rate, the reward's label
    accuracy); closed/accuracy (MCQ, yes/no with choices): `answers.label_accuracy`, the reward's
    accuracy; open/*: `metrics.open_recall` / `exact_match_rate` on `answers.normalize_answer`.
    """
    out: dict[str, float] = {}
    pairs = [(s, c or "") for s, c in zip(samples, completions)]
    ground = [(s, c) for s, c in pairs if s.task == "grounding"]
    if ground:
        g_samples = [s for s, _ in ground]
        g = grounding.summarize(g_samples, grounding.score_images(g_samples, [c for _, c in ground]))
        for name in GROUNDING_METRICS:
            out[f"grounding/{name}"] = getattr(g, name)
    closed = [(s, c) for s, c in pairs if s.task in ("vqa", "text_qa") and s.choices]
    if closed:
        out["closed/accuracy"] = sum(label_accuracy(c, s) for s, c in closed) / len(closed)
    open_ = [(s, parse_completion(c).answer) for s, c in pairs if s.task == "vqa" and not s.choices]
    if open_:
        out["open/recall"] = M.open_recall([a for _, a in open_], [s.answer for s, _ in open_])
        out["open/exact_match"] = M.exact_match_rate([a for _, a in open_], [s.answer for s, _ in open_])
    text = [(s, parse_completion(c).answer) for s, c in pairs
            if s.task in ("report", "caption") or (s.task == "text_qa" and not s.choices)]
    if text:
        preds, refs = [a for _, a in text], [s.answer for s, _ in text]
        out["report/rouge_l"] = M.rouge_l(preds, refs)
        out["report/bleu4"] = M.bleu(preds, refs)[3]
        out["report/cider_d"] = M.cider_d(preds, refs)
    return out


def write_overlays(samples: list[Sample], completions: list[str | None], out_dir: Path, n: int = 6) -> list[Path]:
    """PNG: ground truth (green) vs prediction (red) boxes for the first n grounding samples."""
    from PIL import Image, ImageDraw

    paths = []
    for s, c in zip(samples, completions):
        if s.task != "grounding" or len(paths) >= n:
            continue
        out_dir.mkdir(parents=True, exist_ok=True)  # here, so benchmarks without boxes leave no empty folder
        with Image.open(s.images[0]) as im:
            im = im.convert("RGB")
        scale = max(1, 256 // max(im.size))
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
        d = ImageDraw.Draw(im)
        for b in s.boxes:
            d.rectangle([c_ * scale for c_ in b], outline=(0, 220, 0), width=2)
        for b in parse_completion(c or "").boxes.boxes:
            px = to_pixels(b, s.image_size or im.size)
            if is_valid_box(px):
                d.rectangle([v * scale for v in px], outline=(230, 0, 0), width=2)
        p = out_dir / f"{s.id.replace('/', '_')}.png"
        im.save(p)
        paths.append(p)
    return paths


def markdown_table(results: list[BenchResult]) -> str:
    cols = sorted({k for r in results for k in r.metrics})
    lines = ["| benchmark | n | " + " | ".join(cols) + " | engine errors | seconds |",
             "|---|---|" + "---|" * len(cols) + "---|---|"]
    for r in results:
        vals = [f"{100 * r.metrics[c]:.1f}" if c in r.metrics and c not in NOT_PERCENT else
                (f"{r.metrics[c]:.3f}" if c in r.metrics else "—") for c in cols]
        lines.append(f"| {r.name} | {r.n} | " + " | ".join(vals) + f" | {r.errors} | {r.seconds:.1f} |")
    lines.append("")
    lines.append("Percentages except CIDEr-D and boxes per image. RaTE and Semb: skipped — they need the RaTE-Score and a "
                 "sentence-embedding model (supply them via medmo_rl.metrics.rate_score / semb_score).")
    return "\n".join(lines)
