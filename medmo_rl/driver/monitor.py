"""The RL stage's resource monitor: every rl.monitor_every steps, one row of rl/resources.jsonl.

A row: the step, the driver's and each Ray actor class's RSS on this node (medmo_rl/resources.py)
and process count, their open file descriptors, /dev/shm entries and the object store's bytes in use (cluster-wide,
from the raylet). At the end of the stage `finish()` plots rl/resources.png and returns each
series' growth per 100 steps (least squares) — the figures a soak run reports.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import ray

from medmo_rl.plots import panel_curves
from medmo_rl.resources import growth_per_step, node_snapshot

log = logging.getLogger("medmo_rl")
MIB = 2**20


def object_store_bytes() -> float:
    """Bytes in the object store (all nodes), from the raylet's memory report; NaN (logged) where
    Ray's private API for it is missing or does not answer."""
    try:
        import grpc  # Ray's own dependency
        from ray._private.internal_api import get_memory_info_reply, get_state_from_address
    except ImportError as exc:
        log.warning("resource monitor: object-store bytes unavailable (%s)", exc)
        return float("nan")
    try:
        reply = get_memory_info_reply(get_state_from_address(ray.get_runtime_context().gcs_address),
                                      timeout_seconds=10.0)
        return float(reply.store_stats.object_store_bytes_used)
    except (AttributeError, grpc.RpcError, OSError) as exc:
        log.warning("resource monitor: object-store bytes unavailable (%s: %s)", type(exc).__name__, exc)
        return float("nan")


def local_raylet_pid() -> int:
    """The pid of this node's raylet, as a zero-CPU task pinned to this node sees it."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    task = ray.remote(num_cpus=0)(lambda: int(os.environ["RAY_RAYLET_PID"]))
    return ray.get(task.options(scheduling_strategy=here).remote(), timeout=120)


class ResourceMonitor:
    def __init__(self, path: Path, every: int):
        self.path, self.every = Path(path), every
        self._raylet_pid: int | None = None

    def sample(self, step: int) -> dict | None:
        if not self.every or step % self.every:
            return None
        if self._raylet_pid is None:
            self._raylet_pid = local_raylet_pid()  # first sample only: the workers of THIS cluster
        snap = node_snapshot(raylet_pid=self._raylet_pid)
        row = {"step": step, "time": time.time(), **{f"rss/{k}": v for k, v in sorted(snap.rss_by_role.items())},
               **{f"procs/{k}": v for k, v in sorted(snap.procs_by_role.items())},
               "open_fds": snap.open_fds, "shm_entries": snap.shm_entries, "object_store_bytes": object_store_bytes()}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}) + "\n")
        return row

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(x) for x in self.path.read_text().splitlines() if x.strip()]

    def series(self) -> dict[str, list[tuple[int, float]]]:
        """(step, value) per quantity; an actor class's RSS per process (`rss_per_proc/<role>`), since
        the pool's size, and so the class's summed RSS, changes with every resize."""
        rows = self.rows()
        roles = sorted({k.removeprefix("rss/") for r in rows for k in r if k.startswith("rss/")})
        out = {f"rss_per_proc/{role}": [(r["step"], r[f"rss/{role}"] / r[f"procs/{role}"]) for r in rows
                                        if r.get(f"rss/{role}") is not None and r.get(f"procs/{role}")]
               for role in roles}
        for k in ("open_fds", "shm_entries", "object_store_bytes"):
            out[k] = [(r["step"], r[k]) for r in rows if r.get(k) is not None]
        return out

    def finish(self) -> dict[str, float]:
        """→ {series: growth per 100 steps (bytes or counts)}; writes resources.png next to the JSONL."""
        series = self.series()
        if len(self.rows()) < 2:
            return {}
        slopes = {k: 100 * growth_per_step([s for s, _ in pts], [v for _, v in pts]) for k, pts in series.items()}
        xy = lambda k, scale=1.0: ([s for s, _ in series[k]], [v / scale for _, v in series[k]])
        panel_curves({"RSS per process (MiB)": {k.removeprefix("rss_per_proc/"): xy(k, MIB)
                                                for k in series if k.startswith("rss_per_proc/")},
                      "open fds": {"driver + workers": xy("open_fds")},
                      "/dev/shm entries": {"files": xy("shm_entries")},
                      "object store (MiB)": {"in use": xy("object_store_bytes", MIB)}},
                     self.path.with_suffix(".png"), title="RL stage: resources on this node")
        return slopes
