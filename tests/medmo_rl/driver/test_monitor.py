"""The RL stage's resource monitor against a real Ray cluster: rows every N steps, a PNG, slopes."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from medmo_rl.driver.monitor import ResourceMonitor

pytestmark = pytest.mark.integration


def test_samples_every_n_steps_see_the_object_store_grow_and_plot(ray_local, tmp_path):
    mon = ResourceMonitor(tmp_path / "resources.jsonl", every=10)
    kept = []
    for step in range(1, 31):
        if step % 10 == 0:
            kept.append(ray_local.put(np.ones(8 * 2**20 // 8)))  # +8 MiB held in the store per sample
        row = mon.sample(step)
        assert (row is not None) == (step % 10 == 0)
    rows = [json.loads(x) for x in (tmp_path / "resources.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30]
    assert all(r["rss/driver"] > 0 and r["open_fds"] > 0 for r in rows)
    used = [r["object_store_bytes"] for r in rows]
    assert used[1] - used[0] >= 8 * 2**20 and used[2] - used[1] >= 8 * 2**20, used
    growth = mon.finish()
    assert growth["object_store_bytes"] == pytest.approx(8 * 2**20 * 10, rel=0.2)  # per 100 steps: 8 MiB / 10 steps
    assert (tmp_path / "resources.png").stat().st_size > 10_000
    assert ResourceMonitor(tmp_path / "off.jsonl", every=0).sample(10) is None


def test_only_this_clusters_workers_are_counted(ray_local):
    from medmo_rl.driver.monitor import local_raylet_pid
    from medmo_rl.resources import node_snapshot

    @ray_local.remote(num_cpus=0)
    class Probe:
        def pid(self) -> int:
            return os.getpid()

    p = Probe.remote()
    ray_local.get(p.pid.remote())
    raylet = local_raylet_pid()
    assert node_snapshot(raylet_pid=raylet).procs_by_role.get("Probe") == 1
    assert "Probe" not in node_snapshot(raylet_pid=raylet + 10**7).procs_by_role  # another cluster's raylet
    ray_local.kill(p)


def test_growth_is_per_process_so_a_resize_is_not_a_leak(tmp_path):
    """Two rollout actors: pid 11 grows 1 MiB per 10 steps, pid 12 is flat; pid 13 (a worker a
    resize added for two samples, much smaller) would drag a per-role mean down — it is ignored."""
    mib = 2**20
    rows = []
    for i, step in enumerate((10, 20, 30, 40)):
        procs = {"11": ["RolloutActor", (100 + i) * mib, 50, 80 * mib], "12": ["RolloutActor", 300 * mib, 40 + i, (200 + 2 * i) * mib]}
        if step >= 30:
            procs["13"] = ["RolloutActor", 10 * mib, 10, 5 * mib]
        rows.append({"step": step, "shm_entries": 2, "object_store_bytes": 5 * mib, "processes": procs})
    path = tmp_path / "resources.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    growth = ResourceMonitor(path, every=10).growth()
    assert growth["rss_per_proc/RolloutActor"] == pytest.approx(10 * mib)  # per 100 steps: 1 MiB / 10 steps
    assert growth["fds_per_proc/RolloutActor"] == pytest.approx(10.0)  # pid 12: +1 fd / 10 steps
    assert growth["anon_per_proc/RolloutActor"] == pytest.approx(20 * mib)  # pid 12's own pages: +2 MiB / 10 steps
    assert growth["shm_entries"] == 0 and growth["object_store_bytes"] == 0
