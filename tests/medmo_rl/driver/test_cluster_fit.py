"""A cluster that cannot hold the job as configured (issue 16), with real Ray:

- `ray job submit -- python -m medmo_rl.run` on a 2-CPU head (what a plain `ray start --head`
  gives on this 2-core machine) completes: the RL stage's CPU reservations are scaled to fit, the
  rollout pool grows to 2 workers while it runs, and a RELATIVE output_dir lands outside Ray's
  temporary working-dir copy, where the job's output said;
- a config that needs GPUs on a CPU cluster stops within 60 s naming demand, supply and keys;
- a driver whose cluster is killed exits with an error instead of lingering.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest
from test_pipeline import FAST, _env  # same folder: pytest puts it on sys.path

REPO = Path(__file__).resolve().parents[3]
RAY = str(Path(sys.executable).parent / "ray")

pytestmark = pytest.mark.integration


def _free_ports(n: int) -> list[int]:
    """n distinct free ports (each socket held open until all are picked, so none repeats)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


@contextlib.contextmanager
def ray_head(temp: Path, num_cpus: int):
    """`ray start --head --block` in its own process group and temp dir → (dashboard URL, GCS
    address); stopped by killing that group only (`ray stop` would kill every cluster here)."""
    temp.mkdir(parents=True)
    dash, gcs, agent_http, agent_grpc, metrics, runtime_env = _free_ports(6)
    cmd = [RAY, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", str(num_cpus),
           "--temp-dir", str(temp), "--port", str(gcs), "--dashboard-host", "127.0.0.1",
           "--dashboard-port", str(dash), "--dashboard-agent-listen-port", str(agent_http),
           "--dashboard-agent-grpc-port", str(agent_grpc), "--metrics-export-port", str(metrics),
           "--runtime-env-agent-port", str(runtime_env), "--include-dashboard=true", "--disable-usage-stats"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=open(temp / "head.log", "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{dash}"
        deadline = time.monotonic() + 180
        while True:  # the dashboard comes up some seconds after the head
            assert proc.poll() is None, (temp / "head.log").read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/api/version", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "Ray dashboard not up after 180 s"
            time.sleep(1)
        yield url, f"127.0.0.1:{gcs}", proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        time.sleep(2)
        left = subprocess.run(["pgrep", "-f", str(temp)], capture_output=True, text=True).stdout.split()
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


@pytest.mark.slow
def test_job_on_a_two_cpu_head_scales_to_fit_and_keeps_its_run_dir(test_root):
    output_root = test_root / "persistent"
    done = threading.Event()
    control: list[subprocess.CompletedProcess] = []
    with ray_head(test_root / "rayhead2", num_cpus=2) as (dashboard, gcs, _):

        def grow_pool() -> None:  # the operator, once the RL stage has created its control actor
            while not done.is_set():
                r = subprocess.run([sys.executable, "-m", "medmo_rl.control", "--address", gcs, "--name", "fit2",
                                    "--rollout-workers", "2"], cwd=REPO, env=_env(), capture_output=True, text=True,
                                   timeout=120)
                if r.returncode == 0:
                    control.append(r)
                    return
                time.sleep(2)

        grower = threading.Thread(target=grow_pool, daemon=True)
        grower.start()
        # working_dir: the job runs in Ray's temporary copy of the repo, so the relative
        # output_dir "runs" would land (and vanish) there without the driver's redirection
        runtime_env = json.dumps({"working_dir": str(REPO), "env_vars": {"MEDMO_OUTPUT_ROOT": str(output_root)}})
        cmd = [RAY, "job", "submit", "--address", dashboard, "--runtime-env-json", runtime_env, "--",
               "python", "-m", "medmo_rl.run", "output_dir=runs", "name=fit2", *FAST]
        t0 = time.monotonic()
        try:
            deadline = time.monotonic() + 90
            while True:  # the dashboard's job agent needs a few seconds after `ray start`
                r = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=1500)
                out = r.stdout + r.stderr
                if not ("No available agent" in out or "Failed to connect to Ray" in out) or time.monotonic() > deadline:
                    break
                time.sleep(3)
        finally:
            done.set()
            grower.join(timeout=150)
        print(f"job on the 2-CPU head: {time.monotonic() - t0:.0f} s")
    assert r.returncode == 0 and "succeeded" in out, out[-4000:]
    run_dir = output_root / "runs" / "fit2"
    assert f"run directory: {run_dir}\n" in out  # printed first thing, and it is where the run is
    assert json.loads((run_dir / "summary.json").read_text())["run_dir"] == str(run_dir)
    assert f"# Run summary — {run_dir}" in (run_dir / "summary.md").read_text()
    assert "Ray's temporary copy" in out
    # 2 learners + 1 rollout worker + 1 spare, 1 CPU each, on 2 CPUs
    assert "stage4: the cluster has 2 CPUs, the config reserves 4: scaling every CPU reservation of the stage by 0.5" in out
    assert "stage2: the cluster has" not in out  # SFT's 2 workers × 1 CPU fit as configured
    assert (run_dir / "rl" / "final" / "DONE").is_file() and (run_dir / "eval" / "rl" / "results.md").is_file()
    rows = [json.loads(x) for x in (run_dir / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    # the resize to 2 workers found room on the head (0.5 + 0.5 + 2 × 0.5 = 2 CPUs) instead of hanging
    assert control and "rollout workers: 2" in control[0].stdout, "the control CLI never reached the RL stage"
    assert rows[-1]["rollout/num_workers"] == 2


def test_a_gpu_config_on_a_cpu_cluster_stops_within_60_s(test_root):
    out = test_root / "gpu-runs"
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "medmo_rl.run", "rl.use_gpu=true", "cluster.num_cpus=2",
                        f"output_dir={out}", "name=gpu"], cwd=REPO, env=_env(), capture_output=True, text=True,
                       timeout=90)
    elapsed = time.monotonic() - t0
    assert r.returncode != 0 and elapsed < 60, (elapsed, r.stderr[-3000:])
    err = r.stderr
    assert "error: stage4 does not fit the Ray cluster: it reserves 4 CPUs and 2 GPUs" in err, err[-3000:]
    assert "the cluster offers 2 CPUs and 0 GPUs" in err and "a GPU is never shared fractionally" in err
    assert "Change rl.num_learners, rl.cpus_per_learner, rl.use_gpu" in err
    assert not (out / "gpu" / "sft").exists()  # it stopped before any stage trained


DRIVER = textwrap.dedent("""
    import sys, time
    import ray
    from medmo_rl.driver.cluster import start_gcs_watchdog
    ray.init(address=sys.argv[1])
    start_gcs_watchdog(4.0, interval_s=1.0)
    print("ready", flush=True)
    time.sleep(600)
""")


def test_a_driver_whose_cluster_died_exits_with_an_error(test_root):
    with ray_head(test_root / "rayhead-gone", num_cpus=1) as (_, gcs, head):
        driver = subprocess.Popen([sys.executable, "-c", DRIVER, gcs], cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            assert driver.stdout.readline().strip() == "ready"
            os.killpg(head.pid, signal.SIGKILL)  # the whole cluster: GCS, raylet, dashboard
            t0 = time.monotonic()
            rc = driver.wait(timeout=60)
            elapsed = time.monotonic() - t0
            err = driver.stderr.read()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(driver.pid, signal.SIGKILL)
    assert rc == 75, (rc, err[-3000:])
    assert 4 <= elapsed < 20, elapsed  # lost_after_s = 4, probes every 1 s
    port = gcs.rsplit(":", 1)[1]  # Ray may report the node's own IP instead of 127.0.0.1
    assert re.search(rf"the Ray cluster is gone: its GCS at [\d.]+:{port} has not answered for 4 s", err), err[-2000:]
