"""sft/loader.py: the same per-step batches from Arrow (collated ahead in a DataLoader process) as
from the JSONL lists the stage read before; resume at a step; corrupt images skipped and counted."""
from __future__ import annotations

import json

import pytest
import torch

from medmo_rl.arrow_store import ArrowSamples, to_arrow
from medmo_rl.schema import load_samples
from sft.collator import SFTCollator
from sft.loader import StepBatches, prefetched, step_picks
from sft.mixture import MixtureStream

BATCH, ACCUM, WORLD, STEPS = 4, 2, 2, 8
WEIGHTS = (0.6, 0.2, 0.2)


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def mixture(synthetic_dir, test_root):
    names = ("grounding", "vqa", "text_qa")
    old = [load_samples(synthetic_dir[k].resolve()).samples for k in names]  # what the stage read before
    new = [ArrowSamples(to_arrow(synthetic_dir[k], test_root / "loader-arrow")) for k in names]
    return old, new


def _collator(processor):
    return SFTCollator(processor, max_pixels=64 * 64, max_seq_len=256)


def _steps(parts, collator, stream, rank, start_step=0) -> StepBatches:
    return StepBatches(stream, parts, collator, batch_size=BATCH, grad_accum=ACCUM, rank=rank, world=WORLD,
                       start_step=start_step, total_steps=STEPS)


def test_same_sample_ids_per_step_as_the_jsonl_lists(mixture):
    old, new = mixture
    stream = MixtureStream([len(p) for p in new], WEIGHTS, seed=5)
    assert [len(p) for p in new] == [len(p) for p in old]
    for rank in range(WORLD):
        for step in range(1, 41):  # 40 steps × 8 picks: past the first epoch of the 16-record text_qa set
            micro = step_picks(stream, step, BATCH, ACCUM, rank, WORLD)
            assert [[old[d][i].id for d, i in m] for m in micro] == [[new[d][i].id for d, i in m] for m in micro]
            assert [[old[d][i] for d, i in m] for m in micro] == [[new[d][i] for d, i in m] for m in micro]
    picked = {new[d][i].id for d, i in stream.take(0, 320)}
    assert len(picked) > 100  # the comparison covers many records of all three sets
    assert {new[0][0].source, new[2][0].source} <= {new[d][i].source for d, i in stream.take(0, 320)}


def test_prefetched_batches_equal_the_old_inline_collation(processor, mixture):
    old, new = mixture
    stream = MixtureStream([len(p) for p in new], WEIGHTS, seed=5)
    col = _collator(processor)
    got = list(prefetched(_steps(new, col, stream, rank=1), workers=1, prefetch_steps=2))
    assert [g.step for g in got] == list(range(1, STEPS + 1))
    for g in got:  # before: collator([parts[k][i] for the rank's picks]) in the training step, from the lists
        before = [col([old[d][i] for d, i in m]) for m in step_picks(stream, g.step, BATCH, ACCUM, 1, WORLD)]
        assert [b.sample_ids for b in g.batches] == [b.sample_ids for b in before]
        assert all(torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)
                   for a, b in zip(g.batches, before))
        assert all(len(b.sample_ids) == BATCH // WORLD for b in g.batches) and g.skip_counts == {}


def test_resumed_loader_starts_at_the_next_step_with_the_same_batches(processor, mixture):
    _, new = mixture
    stream = MixtureStream([len(p) for p in new], WEIGHTS, seed=9)
    col = _collator(processor)
    full = [[b.sample_ids for b in s.batches] for s in prefetched(_steps(new, col, stream, 0), workers=0,
                                                                 prefetch_steps=1)]
    resumed = list(prefetched(_steps(new, col, stream, 0, start_step=5), workers=1, prefetch_steps=2))
    assert [s.step for s in resumed] == [6, 7, 8]
    assert [[b.sample_ids for b in s.batches] for s in resumed] == full[5:]
    assert full[5] != full[6]


def test_corrupt_image_is_skipped_counted_and_named_from_the_loader_process(processor, synthetic_dir, tmp_path):
    good = load_samples(synthetic_dir["grounding"]).samples[:6]
    truncated = tmp_path / "truncated.png"
    data = open(good[0].images[0], "rb").read()
    truncated.write_bytes(data[: len(data) // 2])  # a PNG cut mid-stream: opens, fails to decode
    records = [s.to_json() for s in good]
    for r in records[:2]:
        r["id"], r["images"] = "corrupt-" + r["id"], [str(truncated)]
    jsonl = tmp_path / "with_corrupt.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
    parts = [ArrowSamples(to_arrow(jsonl, tmp_path / "arrow"))]  # the file exists: conversion accepts it
    assert len(parts[0]) == 6
    stream = MixtureStream([6], [1.0], seed=0)
    got = list(prefetched(_steps(parts, _collator(processor), stream, rank=0), workers=1, prefetch_steps=2))
    picked = [parts[0][i].id for m in range(1, STEPS + 1) for micro in step_picks(stream, m, BATCH, ACCUM, 0, WORLD)
              for _, i in micro]
    n_corrupt = sum(rid.startswith("corrupt-") for rid in picked)
    assert n_corrupt >= 4  # 32 picks of 6 records, 2 of them corrupt
    assert sum(g.skip_counts.get("corrupt_image", 0) for g in got) == n_corrupt
    assert all(set(g.skip_counts) <= {"corrupt_image"} for g in got)
    named = {rid: why for g in got for rid, why in g.skipped_ids.items()}
    assert named == {r["id"]: "corrupt_image" for r in records[:2]}
    assert sum(len(g.skipped_ids) for g in got) == 2  # each id named once, however often it is skipped
    kept = [rid for g in got for b in g.batches for rid in b.sample_ids]
    assert kept == [rid for rid in picked if not rid.startswith("corrupt-")]


def test_hand_off_folders_of_killed_processes_are_removed_and_live_ones_kept(tmp_path):
    import os
    import subprocess
    import sys

    from sft.loader import STALE_S, _remove_stale

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid, old = int(dead.stdout), os.path.getmtime(tmp_path) - STALE_S - 60
    folders = {name: tmp_path / name for name in (f"medmo-steps-{dead_pid}-old", f"medmo-steps-{dead_pid}-fresh",
                                                   f"medmo-steps-{os.getpid()}-live", "medmo-steps-notapid")}
    for name, f in folders.items():
        f.mkdir()
        (f / "step000000001.pkl").write_bytes(b"x")
        if not name.endswith("fresh"):
            os.utime(f, (old, old))
    _remove_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n for n in folders if not n.endswith("-old"))


def test_stopping_early_ends_the_reader_and_a_failing_step_reaches_the_loop(processor, mixture):
    import os
    import threading
    from pathlib import Path

    _, new = mixture
    stream = MixtureStream([len(p) for p in new], WEIGHTS, seed=5)
    data = prefetched(_steps(new, _collator(processor), stream, 0), workers=1, prefetch_steps=2)
    assert [next(data).step for _ in range(2)] == [1, 2]
    folders = list(Path("/dev/shm").glob(f"medmo-steps-{os.getpid()}-*"))  # this process's hand-off folder
    assert len(folders) == 1
    data.close()  # what train.py's contextlib.closing does when a stage ends early
    assert not any(t.name == "sft-read-ahead" and t.is_alive() for t in threading.enumerate())
    assert not any(f.exists() for f in folders)

    class Broken(StepBatches):
        def __getitem__(self, k):
            if k == 3:
                raise RuntimeError("a corrupt shard at step 4")
            return super().__getitem__(k)

    broken = Broken(stream, new, _collator(processor), batch_size=BATCH, grad_accum=ACCUM, rank=0, world=WORLD,
                    start_step=0, total_steps=STEPS)
    got = []
    with pytest.raises(RuntimeError, match="a corrupt shard at step 4"):
        for item in prefetched(broken, workers=1, prefetch_steps=2):
            got.append(item.step)
    assert got == [1, 2, 3]
