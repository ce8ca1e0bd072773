"""What a long run holds on this node, sampled, and how fast each quantity grows.

    snap = node_snapshot(raylet_pid=R) # driver + the Ray worker processes of raylet R (this node, this cluster)
    snap.processes                    # {pid: Proc(role="RolloutActor", rss=bytes, fds=n, anon=bytes), ...}
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
class Proc:
    role: str  # "driver", an actor class ("RolloutActor"), "idle_worker"
    rss: int  # bytes resident (VmRSS): private pages + mapped files + shared memory it touched
    fds: int  # open file descriptors
    anon: int = 0  # bytes resident that are the process's own (RssAnon): where a leak shows


@dataclass(frozen=True)
class Snapshot:
    processes: dict[int, Proc] = field(default_factory=dict)  # pid → what it is and holds
    shm_entries: int = 0  # files in /dev/shm (vLLM, torch, Ray and the SFT loader put theirs there)

    @property
    def rss_by_role(self) -> dict[str, int]:  # bytes, summed over the role's processes
        out: dict[str, int] = {}
        for p in self.processes.values():
            out[p.role] = out.get(p.role, 0) + p.rss
        return out

    @property
    def pids_by_role(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for pid, p in sorted(self.processes.items()):
            out.setdefault(p.role, []).append(pid)
        return out

    @property
    def procs_by_role(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.pids_by_role.items()}

    @property
    def open_fds(self) -> int:  # driver + Ray workers
        return sum(p.fds for p in self.processes.values())


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode(errors="replace")


def _status_bytes(pid: int, *keys: str) -> list[int]:
    """Fields of /proc/PID/status in bytes (the kernel reports kB); 0 where missing (a zombie)."""
    found = {}
    for line in _read(f"/proc/{pid}/status").splitlines():
        key = line.split(":", 1)[0]
        if key in keys:
            found[key] = int(line.split()[1]) * 1024
    return [found.get(k, 0) for k in keys]


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
    processes: dict[int, Proc] = {}
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
            rss, anon = _status_bytes(pid, "VmRSS", "RssAnon")
            processes[pid] = Proc(role, rss, len(os.listdir(f"/proc/{pid}/fd")), anon)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    try:
        shm = len(os.listdir("/dev/shm"))
    except FileNotFoundError:
        shm = 0
    return Snapshot(processes, shm)


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


_libc = None  # glibc, once looked up; False where there is none (macOS, musl)


def release_free_heap() -> bool:
    """Give the allocator's free pages back to the OS: glibc's malloc_trim(0). → whether it ran.

    Why: a learner step allocates tensors whose sizes follow the completion lengths, so the glibc
    heap ends up with free holes between live blocks that it keeps resident; every new largest
    batch shape adds some. Measured (bench: 2 DDP ranks through Ray, 128 completions of 1–160
    tokens per step, checkpoint every 10; 360–600 steps): private memory +6.2 / +5.7 MiB per 100
    steps without, +0.1 / +1.0 with malloc_trim after every step (1.12 → 1.19 s a step there;
    bench/learner_memory.py, 200 steps: +9.9 / +0.3 without, −1.3 / +1.2 with, 0.99 → 1.16 s);
    MALLOC_ARENA_MAX=2 did not help (+15.7 / +7.7); a fixed mmap threshold slowed the growth
    (349 → 351 and 350 → 353 MiB from step 20 to 100, where that run was stopped) but made each
    step ~1.8× slower. No-op without glibc.
    """
    global _libc
    if _libc is None:
        try:
            import ctypes

            _libc = ctypes.CDLL("libc.so.6")
            _libc.malloc_trim  # noqa: B018 — musl has no malloc_trim
        except (OSError, AttributeError):
            _libc = False
    if _libc is False:
        return False
    _libc.malloc_trim(0)
    return True
