"""The fault log: one JSON line per fault, summary lines, counts per kind."""
from __future__ import annotations

import json
import math
import threading

import pytest

from medmo_rl.faults import FaultLog


def test_faults_are_appended_as_json_lines_and_rendered_for_the_summary(tmp_path):
    log = FaultLog(tmp_path / "faults.jsonl")
    log.record("learner", what="learner rank 1 died (ActorDiedError) during a learner step",
               action="rebuilt the learner group; replaying from step_000002", recovery_s=21.44)
    log.record("reward_service", what="reward service (pid 7) died (exit code -9)", action="restart failed: boom")
    rows = [json.loads(x) for x in (tmp_path / "faults.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["learner", "reward_service"]
    assert rows[0]["recovery_s"] == 21.44 and rows[1]["recovery_s"] is None  # NaN is not JSON
    assert math.isnan(log.faults[1].recovery_s)
    first, second = log.lines()
    assert first.endswith("learner rank 1 died (ActorDiedError) during a learner step; rebuilt the learner group; "
                          "replaying from step_000002 in 21.4 s")
    assert first[:8] == rows[0]["time"][11:19] and first[2] == ":"  # HH:MM:SS of the same moment
    assert second.endswith("died (exit code -9); restart failed: boom")  # no time taken for a failed recovery
    assert (log.count("learner"), log.count("rollout")) == (1, 0)


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="fault kind 'node'; allowed: learner, reward_service, rollout"):
        FaultLog().record("node", what="x", action="y")


def test_threads_recording_at_once_lose_no_line(tmp_path):
    log = FaultLog(tmp_path / "f.jsonl")
    threads = [threading.Thread(target=lambda: [log.record("rollout", what="w", action="a", recovery_s=1.0)
                                                 for _ in range(50)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = (tmp_path / "f.jsonl").read_text().splitlines()
    assert len(lines) == 200 and all(json.loads(x)["kind"] == "rollout" for x in lines)
