"""medmo_rl/arrow_store.py: JSONL → cached, validated, memory-mapped Arrow; reads by index."""
from __future__ import annotations

import json
import os
import pickle

import pytest

from medmo_rl.arrow_store import DATA, REPORT, ArrowSamples, is_arrow_dir, open_arrow, to_arrow
from medmo_rl.config import DataConfig
from medmo_rl.datasets import open_dataset, resolve_arrow
from medmo_rl.sampler import PromptSampler
from medmo_rl.schema import load_samples


def _bad_lines(image: str) -> list[str]:
    return [
        json.dumps({"id": "no-image", "task": "vqa", "prompt": "q?", "answer": "a", "images": ["gone.png"]}),
        "{not json",
        json.dumps({"id": "bad-box", "task": "grounding", "prompt": "Locate.", "answer": "", "images": [image],
                    "boxes": [[5, 5, 2, 9]], "labels": ["x"], "image_size": [64, 64]}),
        json.dumps({"task": "text_qa", "prompt": "q?", "answer": "a"}),  # no id: named by its position
    ]


@pytest.fixture()
def mixed_jsonl(synthetic_dir, tmp_path):
    """Synthetic grounding + text records (relative image paths), with four bad records spliced in."""
    good = (synthetic_dir["grounding"].read_text().splitlines()[:20]
            + synthetic_dir["text_qa"].read_text().splitlines()[:5])
    path = synthetic_dir["grounding"].parent / f"mixed-{tmp_path.name}.jsonl"  # next to the images
    bad = _bad_lines(json.loads(good[0])["images"][0])
    path.write_text("\n".join(good[:3] + bad[:2] + good[3:] + bad[2:]) + "\n")
    yield path
    path.unlink()


def test_index_reads_equal_the_validated_jsonl(mixed_jsonl, tmp_path):
    folder = to_arrow(mixed_jsonl, tmp_path / "arrow")
    old = load_samples(mixed_jsonl)
    new = open_arrow(folder)
    assert len(new.samples) == len(old.samples) == 25
    assert [new.samples[i] for i in range(25)] == old.samples  # same records, same order, same values
    assert new.samples[-1] == old.samples[-1] and new.samples[3:5] == old.samples[3:5]
    with pytest.raises(IndexError):
        new.samples[25]
    g = new.samples[0]
    assert os.path.isabs(g.images[0]) and os.path.isfile(g.images[0])  # resolved against the JSONL's folder
    assert isinstance(g.boxes[0], tuple) and isinstance(g.image_size, tuple) and new.samples[24].image_size is None


def test_rejects_are_reported_with_ids_at_conversion(mixed_jsonl, tmp_path):
    folder = to_arrow(mixed_jsonl, tmp_path / "arrow")
    report = json.loads((folder / REPORT).read_text())
    assert report["records"] == 25 and report["source"] == str(mixed_jsonl.resolve())
    ids = [rid for rid, _ in report["rejected"]]
    assert ids == ["no-image", f"{mixed_jsonl.name}:5", "bad-box", "#28"]
    assert "image file not found" in report["rejected"][0][1] and "degenerate box" in report["rejected"][2][1]
    assert open_arrow(folder).rejected == load_samples(mixed_jsonl).rejected


def test_converted_once_and_again_when_the_file_changes(mixed_jsonl, tmp_path):
    cache = tmp_path / "arrow"
    first = to_arrow(mixed_jsonl, cache)
    data_file = first / DATA
    stamp = data_file.stat().st_mtime_ns
    assert to_arrow(mixed_jsonl, cache) == first and data_file.stat().st_mtime_ns == stamp  # cached
    with open(mixed_jsonl, "a") as f:
        f.write(json.dumps({"id": "late", "task": "text_qa", "prompt": "q?", "answer": "a"}) + "\n")
    second = to_arrow(mixed_jsonl, cache)
    assert second != first and len(ArrowSamples(second)) == 26 and ArrowSamples(second)[25].id == "late"
    assert sorted(p.name for p in cache.iterdir()) == sorted([first.name, second.name])  # no temp folder left


def test_pickles_as_its_folder_and_serves_the_prompt_sampler(mixed_jsonl, tmp_path):
    samples = ArrowSamples(to_arrow(mixed_jsonl, tmp_path / "arrow"))
    assert len(pickle.dumps(samples)) < 500  # the path, not the rows
    again = pickle.loads(pickle.dumps(samples))
    assert [s.id for s in again] == [s.id for s in samples]
    as_list = load_samples(mixed_jsonl).samples
    a, b = PromptSampler(samples, seed=3), PromptSampler(as_list, seed=3)
    assert [s.id for s in a.take(40)] == [s.id for s in b.take(40)]  # across an epoch boundary (25 records)


def test_a_file_of_rejects_gives_an_empty_table_and_its_report(tmp_path):
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text("\n".join(_bad_lines(str(tmp_path / "x.png"))) + "\n")
    rep = open_arrow(to_arrow(jsonl, tmp_path / "arrow"))
    assert len(rep.samples) == 0 and list(rep.samples) == [] and len(rep.rejected) == 4


def test_names_resolve_to_arrow_folders(synthetic_dir, tmp_path):
    folder = resolve_arrow(str(synthetic_dir["text_qa"]), DataConfig(), tmp_path)
    assert is_arrow_dir(folder) and folder.parent == (tmp_path / "arrow").resolve()
    assert resolve_arrow(str(folder), DataConfig(), tmp_path) == folder  # a converted folder is a name too
    rep = open_dataset(str(synthetic_dir["text_qa"]), DataConfig(), tmp_path)
    assert [s.id for s in rep.samples] == [s.id for s in load_samples(synthetic_dir["text_qa"]).samples]
    assert rep.rejected == []
