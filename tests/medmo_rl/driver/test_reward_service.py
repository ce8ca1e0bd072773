"""The RL stage's reward-service launcher: a real uvicorn child that never outlives the driver."""
import os
import subprocess
import sys
import time

import httpx
import pytest

CHILD = r"""
import sys, time
from pathlib import Path
from medmo_rl.config import load_config
from medmo_rl.driver.reward_service import RewardService
with RewardService(load_config(), Path(sys.argv[1])) as svc:
    print(svc._proc.pid, svc.url, flush=True)
    time.sleep(120)
"""


@pytest.mark.integration
def test_service_answers_and_dies_with_a_killed_driver(tmp_path):
    driver = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    pid_s, url = driver.stdout.readline().split()
    pid = int(pid_s)
    assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    os.kill(driver.pid, 9)  # no __exit__ runs: only PR_SET_PDEATHSIG can stop the child
    driver.wait()
    deadline = time.monotonic() + 15
    while os.path.exists(f"/proc/{pid}") and "zombie" not in open(f"/proc/{pid}/status").read().lower():
        assert time.monotonic() < deadline, "reward service outlived its driver"
        time.sleep(0.2)


@pytest.mark.integration
def test_a_killed_service_is_restarted_on_its_port_and_the_client_retries_cover_the_gap(tmp_path):
    from medmo_rl.config import load_config
    from medmo_rl.driver.reward_service import RewardService
    from medmo_rl.schema import Sample
    from rewards.client import RewardClient
    from rewards.composite import ScoreItem

    sample = Sample(id="s0", task="grounding", prompt="Locate every lesion.", answer="nodule <box>[[0, 0, 500, 500]]</box>",
                    images=("x.png",), boxes=((0.0, 0.0, 32.0, 32.0),), labels=("nodule",), image_size=(64, 64))
    items = [ScoreItem("<think>t</think><answer>nodule <box>[[0, 0, 500, 500]]</box></answer>", 20, sample)] * 4
    cfg = load_config()
    with RewardService(cfg, tmp_path) as svc, RewardClient(svc.url, retries=cfg.reward.retries) as client:
        first = svc._proc.pid
        before = [r.total for r in client.score(items)]
        assert all(r > 0 for r in before)
        os.kill(first, 9)
        results = client.score(items)  # sent while the service is down or restarting
        assert all(r.error is None for r in results), [r.error for r in results]
        assert [r.total for r in results] == before
        assert svc._proc.pid != first and httpx.get(f"{svc.url}/healthz", timeout=5).status_code == 200
        # the watcher records the fault just after the new child turns healthy, which the client's
        # retry may see first: wait for the record (bounded) instead of racing the watcher thread
        deadline = time.monotonic() + 10
        while not svc.faults.lines() and time.monotonic() < deadline:
            time.sleep(0.05)
        lines = svc.faults.lines()
        assert len(lines) == 1 and f"(pid {first}) died (exit code -9); restarted at {svc.url}" in lines[0]
        assert svc.faults.faults[0].kind == "reward_service" and 0 < svc.faults.faults[0].recovery_s < 60
