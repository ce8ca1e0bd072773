"""Every fault a run rode through: what died, when, what was done about it and how long that took.

    faults = FaultLog(rl_dir / "faults.jsonl")     # one JSON line per fault, appended as it happens
    faults.record("learner", what="learner rank 1 died (ActorDiedError) during a learner step",
                  action="rebuilt the learner group from step_000002; replaying from step 3", recovery_s=21.4)
    summary.notes += faults.lines()                # "13:02:11 learner rank 1 died …; rebuilt … in 21.4 s"

Written by the RL stage's recoveries (driver/pipeline.py: learners), the reward-service watcher
(driver/reward_service.py) and the rollout pool (rollout/pool.py: replaced actors). Thread-safe:
the watcher and the pool record from their own threads. Pure stdlib.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

KINDS = ("learner", "reward_service", "rollout")


@dataclass(frozen=True)
class Fault:
    time: str  # wall clock when the fault was noticed, ISO 8601 local time
    kind: str  # one of KINDS
    what: str  # what died, and how it was noticed
    action: str  # what the run did about it
    recovery_s: float  # from noticing the fault to serving again; NaN where the recovery failed

    def line(self) -> str:
        took = f" in {self.recovery_s:.1f} s" if self.recovery_s == self.recovery_s else ""
        return f"{self.time[11:19]} {self.what}; {self.action}{took}"


class FaultLog:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self.faults: list[Fault] = []
        self._lock = threading.Lock()

    def record(self, kind: str, *, what: str, action: str, recovery_s: float = float("nan")) -> Fault:
        if kind not in KINDS:
            raise ValueError(f"fault kind {kind!r}; allowed: {', '.join(KINDS)}")
        fault = Fault(time.strftime("%Y-%m-%dT%H:%M:%S"), kind, what, action, float(recovery_s))
        with self._lock:
            self.faults.append(fault)
            if self.path is not None:
                with open(self.path, "a", encoding="utf-8") as f:
                    # NaN is not JSON: a failed recovery is written as null
                    row = {**asdict(fault), "recovery_s": fault.recovery_s if fault.recovery_s == fault.recovery_s else None}
                    f.write(json.dumps(row) + "\n")
        return fault

    def count(self, kind: str) -> int:
        with self._lock:
            return sum(f.kind == kind for f in self.faults)

    def lines(self) -> list[str]:
        with self._lock:
            return [f.line() for f in self.faults]
