"""metrics.jsonl is strict JSON: non-finite numbers become null at any depth."""
import json
import math

import pytest

from medmo_rl.metrics_log import MetricsWriter, read_metrics


def _strict_loads(line: str):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(line, parse_constant=refuse)


def test_non_finite_values_are_written_as_null(tmp_path):
    w = MetricsWriter(tmp_path / "metrics.jsonl")
    w.write(1, {"reward/total": math.nan, "ratio_max": math.inf, "nested": {"a": -math.inf, "b": [1.5, math.nan]},
                "ids": ("x", "y"), "ok": 0.25})
    w.close()
    (line,) = (tmp_path / "metrics.jsonl").read_text().splitlines()
    row = _strict_loads(line)
    assert row == {"step": 1, "reward/total": None, "ratio_max": None, "nested": {"a": None, "b": [1.5, None]},
                   "ids": ["x", "y"], "ok": 0.25}
    assert read_metrics(tmp_path / "metrics.jsonl") == [row]


def test_the_strict_reader_used_above_rejects_bare_nan():
    with pytest.raises(ValueError, match="NaN"):
        _strict_loads(json.dumps({"x": math.nan}))
