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
