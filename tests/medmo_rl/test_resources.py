"""Node resources from /proc and the least-squares growth a soak reports."""
from __future__ import annotations

import math
import os

import pytest

from medmo_rl.resources import _status_bytes, growth_per_step, node_snapshot, release_free_heap, role_of


def test_growth_is_the_least_squares_slope():
    # y = 3 + 2x exactly → 2; with noise (0,1,2,3 → 1,2,2,4): x̄=1.5, ȳ=2.25, Σ(x−x̄)(y−ȳ)=4.5, Σ(x−x̄)²=5 → 0.9
    assert growth_per_step([0, 10, 20], [3, 23, 43]) == pytest.approx(2.0)
    assert growth_per_step([0, 1, 2, 3], [1, 2, 2, 4]) == pytest.approx(0.9)
    assert math.isnan(growth_per_step([5], [1.0])) and math.isnan(growth_per_step([2, 2], [1.0, 3.0]))
    with pytest.raises(ValueError, match="3 steps for 2 values"):
        growth_per_step([1, 2, 3], [1, 2])


def test_ray_worker_command_lines_name_their_actor_class():
    assert role_of("ray::RolloutActor.generate") == "RolloutActor"
    assert role_of("ray::_LearnerActor.train_step ") == "_LearnerActor"
    assert role_of("ray::IDLE") == "idle_worker"
    assert role_of("/usr/bin/python -m pytest") is None


def test_the_snapshot_sees_this_process_as_the_driver():
    ballast = bytearray(64 * 2**20)  # touched: 64 MiB more resident
    ballast[::4096] = b"x" * len(ballast[::4096])
    snap = node_snapshot()
    assert snap.procs_by_role["driver"] == 1 and snap.rss_by_role["driver"] > 64 * 2**20
    assert snap.processes[os.getpid()].anon > 64 * 2**20  # the ballast is private memory
    assert snap.open_fds >= len(os.listdir(f"/proc/{os.getpid()}/fd")) - 1  # the listing's own fd comes and goes
    assert snap.shm_entries == len(os.listdir("/dev/shm"))
    other = node_snapshot(driver_pid=1)  # pid 1 is not ours: this process is then no role at all
    assert "driver" not in other.rss_by_role or other.rss_by_role["driver"] != snap.rss_by_role["driver"]
    del ballast


def test_release_free_heap_returns_the_holes_glibc_keeps():
    """Blocks below glibc's mmap threshold live in the heap; freed under a live top block they
    stay resident until malloc_trim (what a learner step's varying tensor sizes leave behind)."""
    anon = lambda: _status_bytes(os.getpid(), "RssAnon")[0]  # noqa: E731
    blocks = [bytearray(100_000) for _ in range(1500)]  # 150 MB
    top = blocks[-1]
    del blocks
    before = anon()
    assert release_free_heap()  # this machine (and CI) run glibc
    assert before - anon() > 100 * 2**20
    assert len(top) == 100_000
