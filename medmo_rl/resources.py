"""What a long run holds on this node, sampled, and how fast each quantity grows.

    snap = node_snapshot(raylet_pid=R) # driver + the Ray worker processes of raylet R (this node, this cluster)
    snap.rss_by_role                  # {"driver": bytes, "RolloutActor": bytes, "_LearnerActor": bytes, ...}
    growth_per_step(steps, values)    # least-squares slope: what a soak reports per resource

Read from /proc (Linux, like every Ray node): no psutil at run time. A Ray worker carries its
raylet's pid in RAY_RAYLET_PID, which tells this cluster's workers from another cluster's on the
same machine. Only this node's processes are seen; on a multi-node cluster each node's own
monitor would be needed (not built). Pure stdlib.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence


@dataclass(frozen=True)
class Snapshot:
    rss_by_role: dict[str, int] = field(default_factory=dict)  # bytes, summed over the role's processes
    procs_by_role: dict[str, int] = field(default_factory=dict)  # how many processes each role has
    open_fds: int = 0  # driver + Ray workers
    shm_entries: int = 0  # files in /dev/shm (vLLM, torch and Ray leave theirs there)
    pids_by_role: dict[str, list[int]] = field(default_factory=dict)


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode(errors="replace")


def _rss_bytes(pid: int) -> int:
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024  # the kernel reports kB
    return 0  # a zombie has no VmRSS


def role_of(cmdline: str) -> str | None:
    """'ray::RolloutActor.generate' → 'RolloutActor'; 'ray::IDLE' → 'idle_worker'; not Ray → None."""
    if not cmdline.startswith("ray::"):
        return None
    name = cmdline[5:].split()[0] if cmdline[5:].strip() else ""
    name = name.split(".")[0]
    return "idle_worker" if name in ("IDLE", "") else name


def _raylet_pid_of(pid: int) -> int | None:
    for item in _read(f"/proc/{pid}/environ").split("\0"):
        if item.startswith("RAY_RAYLET_PID="):
            return int(item.removeprefix("RAY_RAYLET_PID="))
    return None


def node_snapshot(driver_pid: int | None = None, raylet_pid: int | None = None) -> Snapshot:
    """RSS per role, fds and /dev/shm entries now; processes that exit while being read are skipped.
    raylet_pid: count only that raylet's workers (None: every Ray worker of this user)."""
    driver_pid = os.getpid() if driver_pid is None else driver_pid
    uid = os.getuid()
    rss: dict[str, int] = {}
    pids: dict[str, list[int]] = {}
    fds = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            role = "driver" if pid == driver_pid else role_of(_read(f"/proc/{pid}/cmdline").replace("\0", " "))
            if role is None or (role != "driver" and raylet_pid is not None and _raylet_pid_of(pid) != raylet_pid):
                continue
            r, n_fds = _rss_bytes(pid), len(os.listdir(f"/proc/{pid}/fd"))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        rss[role] = rss.get(role, 0) + r
        pids.setdefault(role, []).append(pid)
        fds += n_fds
    try:
        shm = len(os.listdir("/dev/shm"))
    except FileNotFoundError:
        shm = 0
    return Snapshot(rss, {k: len(v) for k, v in pids.items()}, fds, shm, pids)


def growth_per_step(steps: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of values over steps: b = Σ(x−x̄)(y−ȳ) / Σ(x−x̄)²; NaN under two points."""
    if len(steps) != len(values):
        raise ValueError(f"{len(steps)} steps for {len(values)} values")
    n = len(steps)
    if n < 2:
        return float("nan")
    mx, my = sum(steps) / n, sum(values) / n
    sxx = sum((x - mx) ** 2 for x in steps)
    if sxx == 0:
        return float("nan")
    return sum((x - mx) * (y - my) for x, y in zip(steps, values)) / sxx
