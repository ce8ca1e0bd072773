"""`python -m rewards.serve` as a real process, and the same app as 2 Ray Serve replicas."""
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from reward_testlib import GROUNDING, VQA_YES, free_port

from medmo_rl.config import RewardConfig

ROOT = Path(__file__).resolve().parents[2]
BODY = {"items": [{"completion": "<think>\nx\n</think>\n<answer>\nyes\n</answer>", "num_tokens": 5, "reference": VQA_YES.to_json()},
                  {"completion": "<answer>nodule <box>[[100, 100, 500, 300]]</box></answer>", "num_tokens": 5,
                   "reference": GROUNDING.to_json()}]}


def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(url)


def test_cli_with_recipe_config_and_token(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("reward:\n  w_tag_count: 0.0\n  w_bbox: 2.0\n")
    port = free_port()
    env = dict(os.environ, MEDMO_REWARD_TOKEN="tok", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "rewards.serve", "--port", str(port), "--config", str(recipe)],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        assert httpx.post(f"{url}/v1/score", json=BODY).status_code == 401
        resp = httpx.post(f"{url}/v1/score", json=BODY, headers={"Authorization": "Bearer tok"})
        assert resp.status_code == 200
        # the recipe's weights: tag_count weighs 0, bbox 2 → VQA: 1·1; grounding: 1·1 + 2·0.5
        assert [r["total"] for r in resp.json()["results"]] == [1.0, 2.0]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.integration
def test_ray_serve_two_replicas(ray_local):
    from ray import serve

    from rewards.serve import SERVE_APP_NAME, deploy_serve

    try:
        url = deploy_serve(RewardConfig(), 2, "127.0.0.1", free_port(), 0.25, token="tok")
        wait_healthy(url)
        replicas = serve.status().applications[SERVE_APP_NAME].deployments["RewardService"].replica_states
        assert replicas.get("RUNNING") == 2
        with httpx.Client(base_url=url, timeout=30, headers={"Authorization": "Bearer tok"}) as client:
            for _ in range(6):  # spread over both replicas by Serve's router
                resp = client.post("/v1/score", json=BODY)
                assert resp.status_code == 200
                assert [r["total"] for r in resp.json()["results"]] == [2.0, 1.5]
            assert client.post("/v1/score", json={"items": [{"completion": 1}]}).status_code == 422
        assert httpx.post(f"{url}/v1/score", json=BODY).status_code == 401
        _kill_a_replica_and_keep_scoring(ray_local, url)
    finally:
        serve.shutdown()


def _kill_a_replica_and_keep_scoring(ray, url: str) -> None:
    """kill -9 one replica: the client's retries cover the gap, no item is lost, and Serve brings
    the deployment back to 2 running replicas (issue 16)."""
    from ray import serve

    from medmo_rl.driver.monitor import local_raylet_pid
    from medmo_rl.resources import node_snapshot
    from medmo_rl.schema import validate_sample
    from rewards.client import RewardClient
    from rewards.composite import ScoreItem
    from rewards.serve import SERVE_APP_NAME

    raylet = local_raylet_pid()
    replica_pids = lambda: sorted(p for role, ps in node_snapshot(raylet_pid=raylet).pids_by_role.items()
                                  if role.startswith("ServeReplica") for p in ps)
    before = replica_pids()
    assert len(before) == 2, node_snapshot(raylet_pid=raylet).pids_by_role
    items = [ScoreItem(it["completion"], it["num_tokens"], validate_sample(it["reference"], check_files=False))
             for it in BODY["items"]] * 8
    os.kill(before[0], 9)
    t0 = time.monotonic()
    with RewardClient(url, retries=6, token="tok") as client:
        for _ in range(5):
            results = client.score(items)
            assert all(r.error is None for r in results), [r.error for r in results if r.error]
            assert [r.total for r in results] == [2.0, 1.5] * 8
    state = lambda: serve.status().applications[SERVE_APP_NAME].deployments["RewardService"].replica_states
    while not (state().get("RUNNING") == 2 and before[0] not in replica_pids() and len(replica_pids()) == 2):
        assert time.monotonic() - t0 < 120, (state(), replica_pids())
        time.sleep(0.5)
    print(f"serve replica kill -9: back to 2 running replicas in {time.monotonic() - t0:.1f} s")


def test_cli_two_workers_share_the_port_and_metrics(tmp_path, tiny_model_dir):
    import psutil
    from prometheus_client.parser import text_string_to_metric_families

    from rewards.labels import encode_label

    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("MEDMO_REWARD_TOKEN", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "rewards.serve", "--port", str(port), "--workers", "2",
                             "--tokenizer", str(tiny_model_dir)], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        deadline = time.monotonic() + 30
        while len(psutil.Process(proc.pid).children()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)  # uvicorn's supervisor starts its workers one after the other
        workers = [c for c in psutil.Process(proc.pid).children() if "python" in c.name().lower()]
        assert len(workers) >= 2
        n = 12
        for _ in range(n):  # new connections: the kernel spreads them over the workers
            resp = httpx.post(f"{url}/get_reward", json={"query": ["p<answer>yes</answer><|im_end|>"], "prompts": ["p"],
                                                         "labels": [encode_label(VQA_YES)]})
            assert resp.status_code == 200
            assert resp.json()["extra_logs"]["overlong"] == [0.0]  # --tokenizer: the overlong part is scored
            assert httpx.post(f"{url}/v1/score", json=BODY).status_code == 200
        counts = {}
        for _ in range(4):  # whichever worker answers, /metrics counts every worker's requests
            text = httpx.get(f"{url}/metrics").text
            counts = {tuple(sorted(s.labels.items())): s.value for f in text_string_to_metric_families(text)
                      for s in f.samples if s.name == "medmo_reward_requests_total"}
            assert counts[(("route", "/get_reward"), ("status", "200"))] == n
            assert counts[(("route", "/v1/score"), ("status", "200"))] == n
    finally:
        proc.terminate()
        proc.wait(timeout=20)
