"""SFT stages as real Ray Train jobs (2 workers, DDP on gloo) on the tiny Qwen3-VL.

One uninterrupted 12-step stage is the reference. A second run is killed after step 6 (last
checkpoint: step 4) and restarted: it must continue at step 5 on the same data and end with the
same weights — which only happens if model, optimizer, scheduler, step and data position all came
back. The final checkpoint must load in transformers and generate the same greedy text in vLLM.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch

from medmo_rl.config import DataConfig, RunConfig, SFTConfig, SFTStageConfig
from medmo_rl.prompts import load_image, render_prompt
from medmo_rl.schema import load_samples
from sft.checkpoint import TRAIN_STATE, load_train_state
from sft.stages import run_sft_stages, run_stage

pytestmark = pytest.mark.integration

STEPS = 12


def _stage(synthetic_dir, **kw) -> SFTStageConfig:
    base = dict(mixture={str(synthetic_dir["grounding"]): 1.0}, batch_size=8, lr=2e-3, warmup_ratio=0.1,
                max_steps=STEPS, max_pixels=64 * 64, max_seq_len=256, save_every_steps=4, log_every_steps=1)
    return SFTStageConfig(**{**base, **kw})


SFT = SFTConfig(num_workers=2, cpus_per_worker=1.0)


def _metrics(stage_dir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (stage_dir / "metrics.jsonl").read_text().splitlines()]


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


@pytest.fixture(scope="module")
def reference(ray_local, tiny_model_dir, synthetic_dir, test_root):
    stage_dir = test_root / "sft-ref" / "stage2"
    final = run_stage("stage2", _stage(synthetic_dir), SFT, DataConfig(), seed=0, init_dir=tiny_model_dir,
                      stage_dir=stage_dir, data_cache_dir=test_root / "data")
    return final, stage_dir


def test_stage_learns_and_leaves_an_hf_checkpoint(reference, tiny_model_dir):
    final, stage_dir = reference
    rows = _metrics(stage_dir)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert rows[-1]["loss"] < rows[0]["loss"] - 1.5  # ~6.5 (uniform over 768 tokens) → well below 5
    assert rows[-1]["mean_token_accuracy"] > rows[0]["mean_token_accuracy"] + 0.2
    assert all(r["examples"] == 8 and r["skipped"] == 0 for r in rows)
    assert rows[-1]["position"] == STEPS * 8
    lrs = [r["lr"] for r in rows]  # 1 warm-up step to 2e-3, then cosine towards 0
    assert lrs[0] == pytest.approx(2e-3) and all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] < 1e-4
    assert all((stage_dir / f"{k}.png").is_file() for k in ("loss", "mean_token_accuracy", "entropy"))
    assert any((stage_dir / "tensorboard").iterdir())
    assert (final / "DONE").is_file() and not (final / TRAIN_STATE).exists()
    kept = sorted(p.name for p in stage_dir.glob("checkpoint_0*"))
    assert kept == ["checkpoint_000008", "checkpoint_000012"]  # num_to_keep=2
    state = load_train_state(stage_dir / "checkpoint_000012")
    assert (state["step"], state["position"], state["total_steps"]) == (STEPS, STEPS * 8, STEPS)
    trained, base = _weights(final), _weights(tiny_model_dir)
    assert trained.keys() == base.keys()
    assert not torch.equal(trained["model.language_model.embed_tokens.weight"],
                           base["model.language_model.embed_tokens.weight"])


def test_checkpoint_generates_the_same_in_transformers_and_vllm(reference, synthetic_dir):
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration
    from vllm import LLM, SamplingParams

    final, _ = reference
    samples = load_samples(synthetic_dir["grounding"]).samples[:2]
    processor = AutoProcessor.from_pretrained(final)
    model = Qwen3VLForConditionalGeneration.from_pretrained(final, dtype=torch.float32).eval()
    hf_ids = []
    for s in samples:
        inputs = processor(text=[render_prompt(processor, s)], images=[load_image(s.images[0], 64 * 64)],
                           return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
        hf_ids.append(out[0, inputs["input_ids"].shape[1]:].tolist())
    llm = LLM(model=str(final), dtype="float32", max_model_len=1024, limit_mm_per_prompt={"image": 1},
              enforce_eager=True, seed=0)
    try:
        outs = llm.generate(
            [{"prompt": render_prompt(processor, s), "multi_modal_data": {"image": load_image(s.images[0], 64 * 64)}}
             for s in samples],
            SamplingParams(temperature=0.0, max_tokens=12), use_tqdm=False)
    finally:
        del llm
    eos = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    for hf, o in zip(hf_ids, outs):
        assert len(o.outputs[0].token_ids) > 0
        assert [t for t in hf if t != eos] == [t for t in o.outputs[0].token_ids if t != eos][:len(hf)]


def test_killed_stage_resumes_at_the_next_step_with_the_same_data_and_weights(reference, ray_local, tiny_model_dir,
                                                                               synthetic_dir, test_root):
    ref_final, ref_dir = reference
    stage_dir = test_root / "sft-resume" / "stage2"
    kwargs = dict(seed=0, init_dir=tiny_model_dir, stage_dir=stage_dir, data_cache_dir=test_root / "data")
    with pytest.raises(Exception, match="injected crash after step 6"):
        run_stage("stage2", _stage(synthetic_dir), SFT, DataConfig(), crash_at_step=6, **kwargs)
    assert not (stage_dir / "final").exists()
    assert [r["step"] for r in _metrics(stage_dir)] == [1, 2, 3, 4, 5, 6]

    final = run_stage("stage2", _stage(synthetic_dir), SFT, DataConfig(), **kwargs)
    rows, ref = _metrics(stage_dir), _metrics(ref_dir)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # 5, 6 of the killed run dropped, redone once
    for mine, theirs in zip(rows[4:], ref[4:]):  # steps 5..12 ran after the restart from checkpoint 4
        assert mine["position"] == theirs["position"]
        assert mine["lr"] == pytest.approx(theirs["lr"], rel=1e-9)
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-4)
    resumed, reference_w = _weights(final), _weights(ref_final)
    for name, w in reference_w.items():
        torch.testing.assert_close(resumed[name], w, rtol=1e-4, atol=1e-5)


def test_stages_chain_and_skip_finished_ones(reference, ray_local, tiny_model_dir, synthetic_dir, test_root):
    ref_final, _ = reference
    run_dir = test_root / "sft-chain"
    shutil.copytree(ref_final, run_dir / "sft" / "stage1" / "final")  # stage 1 already done (has DONE)
    stage3 = _stage(synthetic_dir, mixture={str(synthetic_dir["grounding"]): 1.0, str(synthetic_dir["text_qa"]): 1.0},
                    answer_format="think_answer", max_steps=3, lr=5e-4, save_every_steps=0)
    cfg = RunConfig(sft=SFTConfig(num_workers=2, cpus_per_worker=1.0, stage1=_stage(synthetic_dir),
                                  stage2=SFTStageConfig(enabled=False), stage3=stage3))
    last = run_sft_stages(cfg, tiny_model_dir, run_dir, test_root / "data")
    assert last == run_dir.resolve() / "sft" / "stage3" / "final" and (last / "DONE").is_file()
    job = json.loads((run_dir / "sft" / "stage3" / "job.json").read_text())
    assert job["init_dir"] == str((run_dir / "sft" / "stage1" / "final").resolve())
    assert not (run_dir / "sft" / "stage1" / "metrics.jsonl").exists()  # stage 1 did not train again
    assert not (run_dir / "sft" / "stage2").exists()  # disabled
    rows = _metrics(run_dir / "sft" / "stage3")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert sorted(p.name for p in (run_dir / "sft" / "stage3").glob("checkpoint_0*")) == ["checkpoint_000003"]

    before = (run_dir / "sft" / "stage3" / "metrics.jsonl").stat().st_mtime_ns
    t0 = time.time()
    assert run_sft_stages(cfg, tiny_model_dir, run_dir, test_root / "data") == last
    assert time.time() - t0 < 5  # no Ray Train job was started
    assert (run_dir / "sft" / "stage3" / "metrics.jsonl").stat().st_mtime_ns == before


def test_evaluate_runs_on_the_checkpoint(reference, synthetic_dir):
    from sft.evaluate import evaluate_grounding

    final, _ = reference
    ev = evaluate_grounding(final, synthetic_dir["grounding"], limit=6, max_pixels=64 * 64, batch_size=4,
                            max_new_tokens=30)
    ids = [s.id for s in load_samples(synthetic_dir["grounding"]).samples[:5]]
    assert ev.n == 6 and [e[0] for e in ev.examples] == ids
    assert 0.0 <= ev.mean_iou <= 1.0 and 0.0 <= ev.parse_rate <= 1.0
