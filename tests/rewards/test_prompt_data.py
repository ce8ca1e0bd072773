"""python -m rewards.prompt_data: unified records → OpenRLHF prompt JSONL with the label column."""
import json
import os
import subprocess
import sys
from pathlib import Path

from medmo_rl import synthetic
from medmo_rl.prompts import THINK_ANSWER_SYSTEM, user_text
from medmo_rl.schema import load_samples
from rewards.labels import decode_label, label_json
from rewards.prompt_data import main, prompt_row

ROOT = Path(__file__).resolve().parents[2]


def test_rows_for_synthetic_records(tmp_path, capsys):
    paths = synthetic.generate(tmp_path / "syn", 6, seed=0)
    out = tmp_path / "openrlhf" / "prompts.jsonl"
    assert main([str(paths["grounding"]), str(paths["vqa"]), "--out", str(out), "--tasks", "grounding"]) == 0
    samples = load_samples(paths["grounding"]).samples
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(samples) > 0
    for row, sample in zip(rows, samples):
        assert set(row) == {"input", "images", "label", "datasource"}
        system, user = row["input"]
        assert system == {"role": "system", "content": THINK_ANSWER_SYSTEM}
        assert user["role"] == "user" and user["content"] == "<image>" + user_text(sample)
        assert row["images"] == [os.path.abspath(p) for p in sample.images] and all(os.path.isfile(p) for p in row["images"])
        assert label_json(decode_label(row["label"])) == label_json(sample)
        assert row["datasource"] == "synthetic"
    assert "ok, 0 rejected" in capsys.readouterr().err


def test_mcq_choices_and_plain_format(tmp_path):
    from reward_testlib import MCQ

    row = prompt_row(MCQ, "plain")
    assert row["input"] == [{"role": "user", "content": "<image>Which finding?\nA. Effusion\nB. Pneumonia\nC. No finding"}]
    assert decode_label(row["label"]).choices == MCQ.choices


def test_cli_reports_rejects_and_bad_tasks(tmp_path):
    src = tmp_path / "recs.jsonl"
    (tmp_path / "a.png").write_bytes(b"")
    src.write_text(json.dumps({"id": "ok", "task": "vqa", "prompt": "q?", "answer": "yes", "images": ["a.png"]}) + "\n"
                   + json.dumps({"id": "bad", "task": "nope", "prompt": "q", "answer": "a", "images": ["a.png"]}) + "\n")
    out = tmp_path / "o.jsonl"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "rewards.prompt_data", str(src), "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "1 ok, 1 rejected: bad" in done.stderr and len(out.read_text().splitlines()) == 1
    done = subprocess.run([sys.executable, "-m", "rewards.prompt_data", str(src), "--out", str(out), "--tasks", "xray"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "unknown task 'xray'" in done.stderr
