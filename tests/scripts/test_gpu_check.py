"""scripts/gpu_check.sh on the CPU (CI): the CUDA parts skipped, the bf16 check against fp32 still run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))


def test_compare_flags_a_figure_outside_its_tolerance():
    import gpu_check

    ref = {k: 10.0 for k in gpu_check.TOLERANCES} | {"dapo_logprob_gap_mean": 0.0}
    assert gpu_check.compare(ref, dict(ref)) == []
    bad = dict(ref, sft_loss_2=10.2, dapo_grad_norm=11.0, dapo_logprob_gap_mean=0.2, dapo_entropy=float("nan"))
    failures = gpu_check.compare(ref, bad)
    assert [f.split(":")[0] for f in failures] == ["sft_loss_2", "dapo_entropy", "dapo_grad_norm", "dapo_logprob_gap_mean"]


@pytest.mark.slow
def test_gpu_check_passes_on_the_cpu_and_says_what_it_skipped(test_root):
    env = dict(os.environ, PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([str(ROOT / "scripts" / "gpu_check.sh")], capture_output=True, text=True, env=env,
                          timeout=240)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr[-3000:]
    assert "shape 2b (2 text layers, 2 vision blocks)" in out and "CUDA: False" in out
    assert "SKIP FSDP2 + bf16 on CUDA, NCCL and MFU" in out
    rows = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.startswith(("sft_", "dapo_"))}
    assert set(rows) == {"sft_loss_1", "sft_loss_2", "sft_grad_norm_1", "dapo_entropy", "dapo_grad_norm",
                         "dapo_logprob_gap_mean"}
    assert all(r[-1] == "ok" for r in rows.values()), out
    ref_loss, got_loss = float(rows["sft_loss_1"][1]), float(rows["sft_loss_1"][2])
    assert 11.0 < ref_loss < 13.5 and got_loss != ref_loss  # ≈ ln 151,936 and really a bf16 run
    assert float(rows["sft_loss_2"][1]) < ref_loss  # the first step lowered the loss on its batch
    assert "gpu_check: passed" in out
