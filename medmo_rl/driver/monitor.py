"""The RL stage's resource monitor: every rl.monitor_every steps, one row of rl/resources.jsonl.

A row: the step, the driver's and each Ray actor class's RSS on this node (medmo_rl/resources.py)
and process count, their open file descriptors, /dev/shm entries and the object store's bytes in use (cluster-wide,
from the raylet). At the end of the stage `finish()` plots rl/resources.png and returns the
growth per 100 steps (least squares) of each role's fastest-growing process, /dev/shm and the
object store — the figures a soak run reports.
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


def in_bytes(series: str) -> bool:
    """Whether a `ResourceMonitor.growth()` series counts bytes (shown in MiB) rather than things."""
    return series.startswith(("rss", "anon")) or series == "object_store_bytes"


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
               "open_fds": snap.open_fds, "shm_entries": snap.shm_entries, "object_store_bytes": object_store_bytes(),
               "processes": {str(pid): [p.role, p.rss, p.fds, p.anon] for pid, p in sorted(snap.processes.items())}}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}) + "\n")
        return row

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(x) for x in self.path.read_text().splitlines() if x.strip()]

    def per_process(self, rows: list[dict] | None = None) -> dict[str, list[tuple[int, float]]]:
        """(step, value) per process and quantity: `rss/<role>/<pid>`, `anon/<role>/<pid>` (its own
        pages: RSS also counts the object store's shared pages it touched, which grow up to the
        store's size without leaking), `fds/<role>/<pid>` — a pool resize starts and stops
        processes, so only a process's own series shows whether it grows."""
        out: dict[str, list[tuple[int, float]]] = {}
        for r in self.rows() if rows is None else rows:
            for pid, (role, rss, fds, anon) in r.get("processes", {}).items():
                out.setdefault(f"rss/{role}/{pid}", []).append((r["step"], rss))
                out.setdefault(f"anon/{role}/{pid}", []).append((r["step"], anon))
                out.setdefault(f"fds/{role}/{pid}", []).append((r["step"], fds))
        return out

    def growth(self, min_samples: int = 3, rows: list[dict] | None = None) -> dict[str, float]:
        """Growth per 100 steps (least squares): per role, its fastest-growing process (RSS and
        private bytes, open fds) among those sampled ≥ min_samples times; and the node-wide
        /dev/shm entries and object-store bytes."""
        rows = self.rows() if rows is None else rows
        out: dict[str, float] = {}
        for key, pts in self.per_process(rows).items():
            if len(pts) < min_samples:
                continue
            kind, role, _ = key.split("/")
            slope = 100 * growth_per_step([s for s, _ in pts], [v for _, v in pts])
            name = f"{kind}_per_proc/{role}"
            out[name] = max(out.get(name, -math.inf), slope)
        for k in ("shm_entries", "object_store_bytes"):
            pts = [(r["step"], r[k]) for r in rows if r.get(k) is not None]
            if len(pts) >= min_samples:
                out[k] = 100 * growth_per_step([s for s, _ in pts], [v for _, v in pts])
        return dict(sorted(out.items()))

    def finish(self) -> dict[str, float]:
        """→ growth(); writes resources.png (one line per process) next to the JSONL."""
        rows = self.rows()
        if len(rows) < 2:
            return {}
        procs = self.per_process(rows)
        xy = lambda pts, scale=1.0: ([s for s, _ in pts], [v / scale for _, v in pts])
        panel_curves({"RSS per process (MiB)": {k.removeprefix("rss/"): xy(v, MIB) for k, v in procs.items()
                                                if k.startswith("rss/")},
                      "private (RssAnon, MiB)": {k.removeprefix("anon/"): xy(v, MIB) for k, v in procs.items()
                                                 if k.startswith("anon/")},
                      "open fds per process": {k.removeprefix("fds/"): xy(v) for k, v in procs.items()
                                               if k.startswith("fds/")},
                      "/dev/shm entries": {"files": xy([(r["step"], r["shm_entries"]) for r in rows])},
                      "object store (MiB)": {"in use": xy([(r["step"], r["object_store_bytes"]) for r in rows
                                                            if r.get("object_store_bytes") is not None], MIB)}},
                     self.path.with_suffix(".png"), title="RL stage: resources on this node, per process")
        return self.growth(rows=rows)
