"""Helpers of the rollout tests: is a process gone, which /dev/shm files does it hold."""
from __future__ import annotations

import os
import time
from pathlib import Path


def shm_held(pid: int) -> set[str]:
    """/dev/shm files a live process has mapped or open (already-unlinked ones excluded)."""
    held = set()
    try:
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            if "/dev/shm/" in line and not line.endswith("(deleted)"):
                held.add(line[line.index("/dev/shm/"):])
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("/dev/shm/"):
                held.add(target)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return held


def pid_gone(pid: int, timeout_s: float = 30.0) -> bool:
    """True once the process has exited (a zombie counts as exited)."""
    import psutil

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.2)
    return False


def shm_entries() -> set[str]:
    return {str(p) for p in Path("/dev/shm").iterdir()}


def shm_orphans(before: set[str]) -> set[str]:
    """/dev/shm files created since `before` that no live process holds any more (= leaked)."""
    new = shm_entries() - before
    if not new:
        return set()
    held = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            held |= shm_held(int(proc.name))
    return new - held
