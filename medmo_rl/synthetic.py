"""A deterministic synthetic "lesion" dataset the tiny default can learn from in minutes.

Each image (v3) is a grey, textured, noisy square with 1–4 bright, non-overlapping lesions —
ellipses or rectangles — of two kinds the pixels tell apart by size, as in radiology: a "nodule"
spans 12–22 % of the side, a "mass" 28–42 % (the gap keeps the kinds separable at 64 px). 10 % of
the images are normal. From the same image the generator makes records of every task in the schema:

  grounding  "Locate every lesion."  → "nodule <box>[[x1, y1, x2, y2], […]]</box>; mass <box>[[…]]</box>"
             (MedMO's multi-label form, 0–1000; nodules first, then masses, each in reading order —
             or as drawn with box_order="annotation": docs/ablations.md measures what that costs SFT)
  vqa closed "Is there a lesion in the image?"  → "yes" | "no"
  vqa open   "How many lesions are shown?"      → "1" … "4"
  vqa open   "What kinds of lesion are shown?"  → "nodule" | "mass" | "nodule and mass"
  caption    "Describe the image."              → "Two bright lesions: a nodule in the upper left and a mass …"
  report     "Write the findings."              → "Findings: … Impression: …"
  text_qa    fixed medical facts, no image

Lesion counts: P(1, 2, 3, 4) = (0.3, 0.3, 0.2, 0.2) on images with lesions, so about 70 % of
grounding images hold two or more — where matching several predictions to several boxes matters,
and where a small model misses or invents boxes. Record i depends only on (seed, i), so any subset
is reproducible on its own.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from medmo_rl.boxes import format_grounding_answer, to_relative
from medmo_rl.schema import Sample, write_jsonl

GROUNDING_PROMPT = "Locate every lesion."
COUNT_PROMPT = "How many lesions are shown?"
KIND_PROMPT = "What kinds of lesion are shown?"
KINDS = ("nodule", "mass")  # also the order of the answer's segments
SHAPES = ("ellipse", "rectangle")
BOX_ORDERS = ("reading", "annotation")
SIDE_RANGE = {"nodule": (0.12, 0.22), "mass": (0.28, 0.42)}  # fraction of the image side, per kind
COUNT_PROBS = (0.3, 0.3, 0.2, 0.2)  # P(1..4 lesions) on an image with lesions
NORMAL_FRACTION = 0.1  # images without a lesion, so "is there a lesion?" has both answers
MASS_PROB = 0.4  # each lesion is a mass with this probability, else a nodule
_NUMBER_WORDS = ("no", "one", "two", "three", "four")
_TEXT_QA = (
    ("Which imaging modality uses X-rays to build cross-sectional images?", "CT"),
    ("Which imaging modality uses strong magnetic fields?", "MRI"),
    ("Which imaging modality uses sound waves?", "ultrasound"),
    ("Which organ does a cardiologist treat?", "heart"),
    ("Which organ does a nephrologist treat?", "kidney"),
    ("Which organ does a hepatologist treat?", "liver"),
    ("Which blood cells carry oxygen?", "red blood cells"),
    ("Which blood cells fight infection?", "white blood cells"),
)


@dataclass(frozen=True)
class Lesion:
    kind: str  # "nodule" | "mass"
    box: tuple[int, int, int, int]  # absolute px, XYXY, exclusive x2/y2


def _region(box: tuple[int, int, int, int], size: int) -> str:
    cx, cy = (box[0] + box[2]) / 2 / size, (box[1] + box[3]) / 2 / size
    v = "upper" if cy < 1 / 3 else "lower" if cy > 2 / 3 else "middle"
    h = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else "centre"
    return "centre" if (v, h) == ("middle", "centre") else f"{v} {h}"


def _apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def place_lesions(rng: np.random.Generator, size: int, n: int, *, tries: int = 50) -> list[Lesion]:
    """Up to n lesions, each kept ≥ 2 px from the others (rejection sampling; a lesion that finds
    no free place in `tries` draws is dropped, so crowded images may hold fewer than n)."""
    out: list[Lesion] = []
    for _ in range(n):
        kind = "mass" if rng.random() < MASS_PROB else "nodule"
        lo, hi = (max(2, int(round(f * size))) for f in SIDE_RANGE[kind])
        for _ in range(tries):
            w, h = (int(rng.integers(lo, hi + 1)) for _ in range(2))
            x1, y1 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
            box = (x1, y1, x1 + w, y1 + h)
            if all(_apart(box, o.box, 2) for o in out):
                out.append(Lesion(kind, box))
                break
    return out


def draw_image(rng: np.random.Generator, size: int, n_lesions: int = 1, *,
               box_order: str = "reading") -> tuple[Image.Image, list[Lesion]]:
    """Grey texture + noise + `n_lesions` bright ellipses/rectangles; returns the image and lesions
    sorted as the answer lists them: kind in KINDS order, then within a kind top-to-bottom,
    left-to-right (box_order "reading") or in the order they were drawn ("annotation")."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    fx, fy, phase = rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.3), rng.uniform(0, 6.28)
    texture = 0.5 + 0.5 * np.sin(fx * xx + phase) * np.cos(fy * yy)
    img = 60 + 40 * texture + rng.normal(0, 12, (size, size))
    lesions = place_lesions(rng, size, n_lesions)
    for les in lesions:
        x1, y1, x2, y2 = les.box
        if SHAPES[int(rng.integers(0, 2))] == "ellipse":
            cx, cy, rx, ry = (x1 + x2) / 2 - 0.5, (y1 + y2) / 2 - 0.5, (x2 - x1) / 2, (y2 - y1) / 2
            inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
        else:
            inside = (xx >= x1) & (xx < x2) & (yy >= y1) & (yy < y2)
        img[inside] = rng.uniform(185, 235) + rng.normal(0, 8, int(inside.sum()))
    arr = np.clip(img, 0, 255).astype(np.uint8)
    if box_order not in BOX_ORDERS:
        raise ValueError(f"box_order {box_order!r}; allowed: {', '.join(BOX_ORDERS)}")
    if box_order == "reading":
        lesions.sort(key=lambda les: (KINDS.index(les.kind), les.box[1], les.box[0]))
    else:  # stable: the drawing order survives within a kind
        lesions.sort(key=lambda les: KINDS.index(les.kind))
    return Image.fromarray(np.stack([arr] * 3, axis=-1), "RGB"), lesions


def _kinds_text(lesions: list[Lesion]) -> str:
    return " and ".join(k for k in KINDS if any(les.kind == k for les in lesions))


def make_records(index: int, seed: int, size: int, image_path: str, *,
                 box_order: str = "reading") -> tuple[Image.Image, list[Sample]]:
    """The image of record `index` and every task's record about it."""
    rng = np.random.default_rng([seed, index])
    n = 0 if rng.random() < NORMAL_FRACTION else 1 + int(rng.choice(len(COUNT_PROBS), p=COUNT_PROBS))
    image, lesions = draw_image(rng, size, n, box_order=box_order)
    base = dict(images=(image_path,), image_size=(size, size), source="synthetic")
    sid = f"syn-{seed}-{index:06d}"
    out: list[Sample] = []
    out.append(Sample(id=f"{sid}-vqa-closed", task="vqa", prompt="Is there a lesion in the image?",
                      answer="yes" if lesions else "no", choices=("yes", "no"), **base))
    if not lesions:
        out.append(Sample(id=f"{sid}-caption", task="caption", prompt="Describe the image.",
                          answer="A normal image with no lesion.", **base))
        return image, out
    kinds = [les.kind for les in lesions]
    out.append(Sample(id=f"{sid}-grounding", task="grounding", prompt=GROUNDING_PROMPT,
                      answer=format_grounding_answer(kinds, [to_relative(les.box, (size, size)) for les in lesions]),
                      boxes=tuple(tuple(float(c) for c in les.box) for les in lesions), labels=tuple(kinds), **base))
    out.append(Sample(id=f"{sid}-vqa-count", task="vqa", prompt=COUNT_PROMPT, answer=str(len(lesions)), **base))
    out.append(Sample(id=f"{sid}-vqa-open", task="vqa", prompt=KIND_PROMPT, answer=_kinds_text(lesions), **base))
    where = [f"a {les.kind} in the {_region(les.box, size)}" for les in lesions]
    count = _NUMBER_WORDS[len(lesions)]
    head = "One bright lesion" if len(lesions) == 1 else f"{count.capitalize()} bright lesions"
    out.append(Sample(id=f"{sid}-caption", task="caption", prompt="Describe the image.",
                      answer=f"{head}: {', '.join(where[:-1]) + ' and ' if len(where) > 1 else ''}{where[-1]}.", **base))
    sized = [f"a {'large' if les.kind == 'mass' else 'small'} {les.kind} in the {_region(les.box, size)}"
             for les in lesions]
    out.append(Sample(id=f"{sid}-report", task="report", prompt="Write the findings.",
                      answer=f"Findings: {count} {'lesion' if len(lesions) == 1 else 'lesions'}: {'; '.join(sized)}. "
                             f"Impression: {_kinds_text(lesions)}.", **base))
    return image, out


def text_qa_records(n: int, seed: int) -> list[Sample]:
    rng = np.random.default_rng([seed, 10**9])
    picks = rng.integers(0, len(_TEXT_QA), n)
    return [Sample(id=f"syn-{seed}-textqa-{i:06d}", task="text_qa", prompt=_TEXT_QA[k][0],
                   answer=_TEXT_QA[k][1], source="synthetic") for i, k in enumerate(picks)]


def generate(out_dir: str | os.PathLike, n_images: int, *, seed: int = 0, size: int = 64,
             start: int = 0, progress: bool = False, box_order: str = "reading") -> dict[str, Path]:
    """Draw `n_images` images into out_dir/images and write one JSONL per task family.

    Returns {"grounding": path, "vqa": path, "caption": path, "report": path, "text_qa": path,
    "all": path}. Idempotent: an existing, complete set (same meta) is reused.
    """
    out = Path(out_dir)
    meta = out / "META"
    order = "" if box_order == "reading" else f" order={box_order}"
    stamp = f"n={n_images} seed={seed} size={size} start={start}{order} v3\n"  # v3: 1–4 lesions per image
    names = ("grounding", "vqa", "caption", "report", "text_qa", "all")
    paths = {k: out / f"{k}.jsonl" for k in names}
    if meta.exists() and meta.read_text() == stamp and all(p.exists() for p in paths.values()):
        return paths
    (out / "images").mkdir(parents=True, exist_ok=True)
    by_task: dict[str, list[Sample]] = {k: [] for k in names}
    it = range(start, start + n_images)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc=f"synthetic data → {out}", unit="img")
    for i in it:
        rel_path = f"images/{seed}_{i:06d}.png"
        image, recs = make_records(i, seed, size, str(out / rel_path), box_order=box_order)
        image.save(out / rel_path)
        for r in recs:
            by_task[r.task if r.task != "text_qa" else "text_qa"].append(r)
    by_task["text_qa"] = text_qa_records(max(1, n_images // 4), seed + start)
    by_task["all"] = [r for k in names[:-1] for r in by_task[k]]
    for k, p in paths.items():
        write_jsonl(by_task[k], p, relative_to=out)
    meta.write_text(stamp)
    return paths
