"""SFT stages as real Ray Train jobs (2 workers, DDP on gloo) on the tiny Qwen3-VL.

One 12-step stage is killed after step 6 (last checkpoint: step 4) and run again: it must redo
steps 5 and 6 with the same data and the same losses — which only happens if model, optimizer,
scheduler, step and data position all came back — and then learn to the end. Its final checkpoint
must load in transformers and generate the same greedy tokens in vLLM.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from medmo_rl.checkpoint import TRAIN_STATE, load_train_state
from medmo_rl.config import DataConfig, RunConfig, SFTConfig, SFTStageConfig
from medmo_rl.prompts import load_image, render_prompt
from medmo_rl.schema import load_samples
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
def trained(ray_local, tiny_model_dir, synthetic_dir, test_root):
    """A 12-step stage killed after step 6 (last checkpoint: step 4), then run again to the end."""
    stage_dir = test_root / "sft" / "stage2"
    kwargs = dict(seed=0, init_dir=tiny_model_dir, stage_dir=stage_dir, data_cache_dir=test_root / "data")
    with pytest.raises(Exception, match="injected crash after step 6"):
        run_stage("stage2", _stage(synthetic_dir), SFT, DataConfig(), crash_at_step=6, **kwargs)
    killed_rows = _metrics(stage_dir)
    assert not (stage_dir / "final").exists()
    final = run_stage("stage2", _stage(synthetic_dir), SFT, DataConfig(), **kwargs)
    return final, stage_dir, killed_rows, kwargs


def test_stage_learns_and_leaves_an_hf_checkpoint(trained, tiny_model_dir, synthetic_dir, test_root):
    final, stage_dir, _, _ = trained
    rows = _metrics(stage_dir)
    (data,) = json.loads((stage_dir / "data_report.json").read_text()).values()  # read from Arrow, converted once
    assert Path(data["path"]).parent == (test_root / "data" / "arrow").resolve()
    assert (data["records"], data["rejected"]) == (len(load_samples(synthetic_dir["grounding"]).samples), 0)
    assert all(0.0 <= r["data_wait_share"] <= 1.0 for r in rows)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert rows[-1]["loss"] < rows[0]["loss"] - 1.5  # ~6.5 (uniform over 768 tokens) → well below 5
    assert rows[-1]["mean_token_accuracy"] > rows[0]["mean_token_accuracy"] + 0.2
    assert all(r["examples"] == 8 and r["skipped"] == 0 for r in rows)
    assert rows[-1]["position"] == STEPS * 8
    lrs = [r["lr"] for r in rows]  # 1 warm-up step to 2e-3, then cosine from 2e-3 towards 0
    assert lrs[:2] == pytest.approx([2e-3, 2e-3]) and all(a > b for a, b in zip(lrs[1:], lrs[2:]))
    assert lrs[-1] == pytest.approx(2e-3 * 0.5 * (1 + math.cos(math.pi * 10 / 11)))
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


def test_checkpoint_generates_the_same_in_transformers_and_vllm(trained, synthetic_dir):
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration
    from vllm import LLM, SamplingParams

    final = trained[0]
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


def test_killed_stage_resumes_at_the_next_step_on_the_same_data(trained):
    _, stage_dir, killed, _ = trained
    assert [r["step"] for r in killed] == [1, 2, 3, 4, 5, 6]
    rows = _metrics(stage_dir)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # 5, 6 of the killed run dropped, redone once
    assert rows[:4] == killed[:4]
    # steps 5 and 6 again from checkpoint 4: the same loss only if weights, optimizer moments, LR schedule
    # and data position all came back (step 6 depends on step 5's AdamW update)
    for mine, before in zip(rows[4:6], killed[4:6]):
        assert (mine["position"], mine["examples"], mine["tokens"]) == (before["position"], before["examples"],
                                                                      before["tokens"])
        assert mine["lr"] == pytest.approx(before["lr"], rel=1e-12)
        assert mine["loss"] == pytest.approx(before["loss"], rel=1e-5)
        assert mine["grad_norm"] == pytest.approx(before["grad_norm"], rel=1e-4)
    assert rows[5]["loss"] != pytest.approx(rows[4]["loss"], rel=1e-3)  # the comparison is not vacuous


@pytest.mark.slow
def test_stage_killed_after_its_last_checkpoint_only_exports_it(trained, synthetic_dir):
    final, stage_dir, _, kwargs = trained
    before, weights = (stage_dir / "metrics.jsonl").read_text(), _weights(final)
    shutil.rmtree(final)  # as if killed between the last report and final/DONE
    assert run_stage("stage2", _stage(synthetic_dir), SFT, DataConfig(), **kwargs) == final
    assert (final / "DONE").is_file() and (stage_dir / "metrics.jsonl").read_text() == before  # no step redone
    for name, w in weights.items():
        assert torch.equal(_weights(final)[name], w)


def test_stages_chain_and_skip_finished_ones(trained, ray_local, tiny_model_dir, synthetic_dir, test_root):
    ref_final = trained[0]
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

    metrics_file = run_dir / "sft" / "stage3" / "metrics.jsonl"
    before = metrics_file.read_text()
    job_file = run_dir / "sft" / "stage3" / "job.json"
    job_written = job_file.stat().st_mtime_ns
    assert run_sft_stages(cfg, tiny_model_dir, run_dir, test_root / "data") == last
    assert job_file.stat().st_mtime_ns == job_written  # everything DONE: no Ray Train job was even prepared
    assert metrics_file.read_text() == before


def test_evaluate_runs_on_the_checkpoint(trained, synthetic_dir):
    from sft.evaluate import evaluate_grounding

    final = trained[0]
    from sft.evaluate import score_grounding

    ev = evaluate_grounding(final, synthetic_dir["grounding"], limit=5, max_pixels=64 * 64, batch_size=4,
                            max_new_tokens=30)
    samples = load_samples(synthetic_dir["grounding"]).samples[:5]
    assert ev.n == 5 and [e[0] for e in ev.examples] == [s.id for s in samples]
    # the summary is the scorer's verdict on exactly the completions it reports (all 5 here)
    ious, parsed = score_grounding([e[1] for e in ev.examples], samples)
    assert [e[2] for e in ev.examples] == [round(v, 4) for v in ious]
    assert ev.mean_iou == pytest.approx(sum(ious) / 5, abs=1e-12)
    assert ev.parse_rate == sum(parsed) / 5
