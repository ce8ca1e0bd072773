"""python -m sft: config + overrides → run folder; with every stage disabled the base model comes back."""
from __future__ import annotations

import json

import yaml

from sft.__main__ import main


def test_cli_with_all_stages_disabled_returns_the_base_and_evaluates_it(ray_local, test_root):
    tmp_path = test_root / "cli"
    tmp_path.mkdir()
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text(yaml.safe_dump({"name": "cli", "output_dir": str(tmp_path / "runs"),
                                   "data": {"synthetic_eval": 8}}))
    final = main(["--config", str(cfg), "sft.stage1.enabled=false", "--eval", "4",
                  "sft.stage2.enabled=false", "sft.stage3.enabled=false"])
    run_dir = tmp_path / "runs" / "cli"
    assert final == run_dir / "base" / "tiny-qwen3vl-seed0" and (final / "config.json").is_file()
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert [resolved["sft"][s]["enabled"] for s in ("stage1", "stage2", "stage3")] == [False, False, False]
    ev = json.loads((run_dir / "sft" / "eval_grounding.json").read_text())
    assert ev["n"] == 4
    # an untrained model writes no box: IoU 0 on every record, nothing parsed (what the README reports)
    assert ev["mean_iou"] == 0.0 and ev["parse_rate"] == 0.0
    assert [iou for _, _, iou in ev["examples"]] == [0.0] * 4
    assert not (run_dir / "sft" / "stage1").exists()
