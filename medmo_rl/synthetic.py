"""A deterministic synthetic "lesion" dataset the tiny default can learn from in minutes.

Each image is a grey, textured, noisy square with (usually) one bright lesion — an ellipse or a
rectangle spanning 15–50 % of the side — called a "mass" when it covers more than 9 % of the
image and a "nodule" otherwise (radiology's size rule), so its kind can be seen in the pixels.
From the same image the generator makes records of every task in the schema:

  grounding  "Locate the lesion."            → "nodule <box>[[x1, y1, x2, y2]]</box>"  (0–1000)
  vqa closed "Is there a lesion in the image?" → "yes" | "no"
  vqa open   "What kind of lesion is shown?" → "nodule" | "mass"
  caption    "Describe the image."           → "A bright nodule in the upper left."
  report     "Write the findings."           → "Findings: ... Impression: ..."
  text_qa    fixed medical facts, no image

Record i depends only on (seed, i), so any subset is reproducible on its own.
The recipe follows one measured to work on 2 CPU cores: 64 px grey noisy images, one bright ellipse or
rectangle of 15–50 % of the side, integer 0–1000 boxes (a 0.87M-parameter Qwen3-VL reached greedy
mean IoU 0.87 on 200 held-out images after 3000 steps of lr 1e-3).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from medmo_rl.boxes import format_grounding_answer, to_relative
from medmo_rl.schema import Sample, write_jsonl

GROUNDING_PROMPT = "Locate the lesion."
KINDS = ("nodule", "mass")
SHAPES = ("ellipse", "rectangle")
MASS_AREA = 0.09  # a lesion covering more of the image than this is a "mass" (and "large" in reports)
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


def draw_image(rng: np.random.Generator, size: int, with_lesion: bool = True) -> tuple[Image.Image, Lesion | None]:
    """Grey texture + noise + optionally one bright ellipse/rectangle; returns the image and lesion."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    fx, fy, phase = rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.3), rng.uniform(0, 6.28)
    texture = 0.5 + 0.5 * np.sin(fx * xx + phase) * np.cos(fy * yy)
    img = 60 + 40 * texture + rng.normal(0, 12, (size, size))
    lesion = None
    if with_lesion:
        w, h = (int(rng.integers(int(0.15 * size), int(0.5 * size) + 1)) for _ in range(2))
        x1, y1 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
        shape = SHAPES[int(rng.integers(0, 2))]
        # the kind follows the size, as in radiology (a nodule is at most 3 cm, a mass larger), so it
        # can be seen in the image; a label drawn independently of the pixels cannot be learned
        kind = "mass" if w * h > MASS_AREA * size * size else "nodule"
        if shape == "ellipse":
            cx, cy, rx, ry = x1 + w / 2 - 0.5, y1 + h / 2 - 0.5, w / 2, h / 2
            inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
        else:
            inside = (xx >= x1) & (xx < x1 + w) & (yy >= y1) & (yy < y1 + h)
        img[inside] = rng.uniform(185, 235) + rng.normal(0, 8, int(inside.sum()))
        lesion = Lesion(kind, (x1, y1, x1 + w, y1 + h))
    arr = np.clip(img, 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([arr] * 3, axis=-1), "RGB"), lesion


def make_records(index: int, seed: int, size: int, image_path: str) -> tuple[Image.Image, list[Sample]]:
    """The image of record `index` and every task's record about it."""
    rng = np.random.default_rng([seed, index])
    has_lesion = rng.random() > 0.1  # 10 % normal images, so "is there a lesion?" has both answers
    image, lesion = draw_image(rng, size, with_lesion=has_lesion)
    base = dict(images=(image_path,), image_size=(size, size), source="synthetic")
    sid = f"syn-{seed}-{index:06d}"
    out: list[Sample] = []
    out.append(Sample(id=f"{sid}-vqa-closed", task="vqa", prompt="Is there a lesion in the image?",
                      answer="yes" if lesion else "no", choices=("yes", "no"), **base))
    if lesion is None:
        out.append(Sample(id=f"{sid}-caption", task="caption", prompt="Describe the image.",
                          answer="A normal image with no lesion.", **base))
        return image, out
    rel = to_relative(lesion.box, (size, size))
    region = _region(lesion.box, size)
    out.append(Sample(id=f"{sid}-grounding", task="grounding", prompt=GROUNDING_PROMPT,
                      answer=format_grounding_answer([lesion.kind], [rel]),
                      boxes=(tuple(float(c) for c in lesion.box),), labels=(lesion.kind,), **base))
    out.append(Sample(id=f"{sid}-vqa-open", task="vqa", prompt="What kind of lesion is shown?",
                      answer=lesion.kind, **base))
    out.append(Sample(id=f"{sid}-caption", task="caption", prompt="Describe the image.",
                      answer=f"A bright {lesion.kind} in the {region}.", **base))
    big = lesion.kind == "mass"
    out.append(Sample(id=f"{sid}-report", task="report", prompt="Write the findings.",
                      answer=f"Findings: a {'large' if big else 'small'} {lesion.kind} in the {region}. "
                             f"Impression: {lesion.kind}.", **base))
    return image, out


def text_qa_records(n: int, seed: int) -> list[Sample]:
    rng = np.random.default_rng([seed, 10**9])
    picks = rng.integers(0, len(_TEXT_QA), n)
    return [Sample(id=f"syn-{seed}-textqa-{i:06d}", task="text_qa", prompt=_TEXT_QA[k][0],
                   answer=_TEXT_QA[k][1], source="synthetic") for i, k in enumerate(picks)]


def generate(out_dir: str | os.PathLike, n_images: int, *, seed: int = 0, size: int = 64,
             start: int = 0, progress: bool = False) -> dict[str, Path]:
    """Draw `n_images` images into out_dir/images and write one JSONL per task family.

    Returns {"grounding": path, "vqa": path, "caption": path, "report": path, "text_qa": path,
    "all": path}. Idempotent: an existing, complete set (same meta) is reused.
    """
    out = Path(out_dir)
    meta = out / "META"
    stamp = f"n={n_images} seed={seed} size={size} start={start} v2\n"  # v2: kind by size
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
        image, recs = make_records(i, seed, size, str(out / rel_path))
        image.save(out / rel_path)
        for r in recs:
            by_task[r.task if r.task != "text_qa" else "text_qa"].append(r)
    by_task["text_qa"] = text_qa_records(max(1, n_images // 4), seed + start)
    by_task["all"] = [r for k in names[:-1] for r in by_task[k]]
    for k, p in paths.items():
        write_jsonl(by_task[k], p, relative_to=out)
    meta.write_text(stamp)
    return paths
