"""The whole recipe as one job: `ray job submit -- python -m medmo_rl.run` on a 2-CPU head (what a
plain `ray start --head` gives on this 2-core machine: the RL stage's CPU reservations are scaled
to fit, issue 16) with Ray's working-dir copy and a RELATIVE output_dir (which must land outside
that copy), its rollout pool grown by `python -m medmo_rl.control` while it runs; then kill -9
mid-RL + resume; then asynchronous RL (rl.max_staleness=1) on the job's SFT checkpoint, with a
rollout actor, the reward service and a learner rank killed, the driver killed, and SIGTERM.

Real everything: a Ray head started with `ray start` (loopback, own temp dir, auth disabled), Ray
Train SFT stages, vLLM rollout actors, the uvicorn reward service, DDP learners, eval with vLLM.
The recipe is the tiny default shrunk by overrides so the suite stays fast.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[3]
FAST = [
    "data.synthetic_train=24", "data.synthetic_eval=8",
    "sft.stage1.max_steps=4", "sft.stage2.max_steps=40", "sft.stage3.max_steps=12",
    "sft.stage1.save_every_steps=4", "sft.stage2.save_every_steps=20", "sft.stage3.save_every_steps=12",
    "rl.max_steps=4", "rl.checkpoint_every=2", "rl.prompts_per_step=6", "rl.dynamic_sampling=false",
    "eval.limit=8",
]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env["RAY_AUTH_MODE"] = "disabled"
    env.pop("RAY_ADDRESS", None)
    return env


@dataclass(frozen=True)
class Head:
    dashboard: str  # http://127.0.0.1:PORT (ray job submit)
    gcs: str  # 127.0.0.1:PORT (ray.init, python -m medmo_rl.control)


@pytest.fixture(scope="module")
def ray_head(test_root):
    """`ray start --head --block` in its own process group; stopped by killing that group only
    (`ray stop` would also kill every other Ray cluster on the machine)."""
    temp = test_root / "rayhead"
    temp.mkdir()
    dash, gcs = _free_port(), _free_port()
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
           "--num-cpus", "2", "--temp-dir", str(temp), "--port", str(gcs), "--dashboard-host", "127.0.0.1",
           "--dashboard-port", str(dash), "--dashboard-agent-listen-port", str(_free_port()),
           "--dashboard-agent-grpc-port", str(_free_port()), "--metrics-export-port", str(_free_port()),
           "--runtime-env-agent-port", str(_free_port()), "--include-dashboard=true", "--disable-usage-stats"]
    log = open(temp / "head.log", "wb")
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{dash}"
        deadline = time.monotonic() + 180
        while True:  # the dashboard comes up some seconds after the head
            assert proc.poll() is None, (temp / "head.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/api/version", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "Ray dashboard not up after 180 s"
            time.sleep(1)
        yield Head(url, f"127.0.0.1:{gcs}")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        time.sleep(2)
        left = subprocess.run(["pgrep", "-f", str(temp)], capture_output=True, text=True).stdout.split()
        for pid in left:
            os.kill(int(pid), signal.SIGKILL)


def _submit(address: str, args: list[str], timeout_s: int, runtime_env: dict) -> subprocess.CompletedProcess:
    ray = str(Path(sys.executable).parent / "ray")
    deadline = time.monotonic() + 90
    while True:  # the dashboard's job agent needs a few seconds after `ray start`
        r = subprocess.run([ray, "job", "submit", "--address", address, "--runtime-env-json", json.dumps(runtime_env),
                            "--", "python", "-m", "medmo_rl.run", *args],
                           cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout_s)
        out = r.stdout + r.stderr
        transient = "No available agent" in out or "Failed to connect to Ray" in out
        if not transient or time.monotonic() > deadline:
            return r
        time.sleep(3)


@pytest.fixture(scope="module")
def submitted_run(ray_head, test_root):
    """The job, and — while it runs — the operator growing its rollout pool to 2 workers with
    `python -m medmo_rl.control` (it answers once the RL stage has created its control actor)."""
    output_root = test_root / "persistent"
    done = threading.Event()
    control: list[subprocess.CompletedProcess] = []

    def grow_pool() -> None:
        while not done.is_set():
            r = subprocess.run([sys.executable, "-m", "medmo_rl.control", "--address", ray_head.gcs, "--name", "jobtest",
                                "--rollout-workers", "2"], cwd=REPO, env=_env(), capture_output=True, text=True,
                               timeout=120)
            if r.returncode == 0:
                control.append(r)
                control.append(subprocess.run(  # one more would wait forever for a place: refused
                    [sys.executable, "-m", "medmo_rl.control", "--address", ray_head.gcs, "--name", "jobtest",
                     "--rollout-workers", "3"], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120))
                return
            time.sleep(2)

    grower = threading.Thread(target=grow_pool, daemon=True)
    grower.start()
    # working_dir: the job runs in Ray's temporary copy of the repo, so the relative output_dir
    # "runs" would land (and vanish) there without the driver's redirection to MEDMO_OUTPUT_ROOT
    runtime_env = {"working_dir": str(REPO), "env_vars": {"MEDMO_OUTPUT_ROOT": str(output_root)}}
    try:
        r = _submit(ray_head.dashboard, ["output_dir=runs", "name=jobtest", *FAST], timeout_s=1200,
                    runtime_env=runtime_env)
    finally:
        done.set()
        grower.join(timeout=150)
    out = r.stdout + r.stderr
    (test_root / "jobtest-output.txt").write_text(out)
    assert r.returncode == 0 and "succeeded" in out, out[-4000:]
    assert control and "rollout workers: 2" in control[0].stdout, "the control CLI never reached the RL stage"
    refused = control[1]
    assert refused.returncode == 2 and "refused: 3 rollout workers do not fit: the cluster has 2 CPUs" in refused.stderr, (
        refused.stdout + refused.stderr)
    assert "so at most 2 fit; the pool stays at 2" in refused.stderr
    return output_root / "runs" / "jobtest"


def test_ray_job_submit_runs_all_stages(submitted_run, test_root):
    d = submitted_run
    out = (test_root / "jobtest-output.txt").read_text()
    assert f"run directory: {d}\n" in out  # printed first thing, and it is where the run is
    assert json.loads((d / "summary.json").read_text())["run_dir"] == str(d)
    assert "Ray's temporary copy" in out
    # 2 learners + 1 rollout worker + 1 spare, 1 CPU each, on 2 CPUs
    assert "stage4: the cluster has 2 CPUs, the config reserves 4: scaling every CPU reservation of the stage by 0.5" in out
    assert "stage2: the cluster has" not in out  # SFT's 2 workers × 1 CPU fit as configured
    assert (d / "config.yaml").is_file() and (d / "summary.md").is_file()
    for st in ("stage1", "stage2", "stage3"):
        assert (d / "sft" / st / "final" / "DONE").is_file()
    assert (d / "rl" / "final" / "DONE").is_file() and (d / "rl" / "final" / "model.safetensors").is_file()
    rows = [json.loads(x) for x in (d / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(r["weight_version"] == r["step"] for r in rows)  # every step pushed verified weights
    assert all(len(r["sample_ids"]) == 6 for r in rows)
    # the operator's resize (python -m medmo_rl.control, see submitted_run) found room on the head
    # (0.5 + 0.5 + 2 × 0.5 = 2 CPUs) instead of hanging
    assert rows[-1]["rollout/num_workers"] == 2
    assert (d / "rl" / "reward_curve.png").stat().st_size > 1000
    summary = json.loads((d / "summary.json").read_text())
    assert set(summary["evals"]) == {"base", "sft", "rl"}
    names = ("mean_iou", "precision50", "recall50", "f1_50", "count_acc", "boxes_per_image", "map50", "parse_rate")
    for model in ("sft", "rl"):  # issue 13's names, the layout evals[model]["<benchmark>:grounding/<metric>"]
        assert {f"synthetic_eval_grounding:grounding/{n}" for n in names} <= set(summary["evals"][model])
    pred = json.loads((d / "eval" / "rl" / "synthetic_eval_grounding.predictions.jsonl").read_text().splitlines()[0])
    assert set(pred) == {"id", "completion", "answer"}
    assert (d / "eval" / "rl" / "results.md").is_file()


def test_kill_mid_rl_then_rerun_resumes_with_identical_sample_ids(submitted_run, test_root):
    """kill -9 the driver after the step-2 checkpoint; the same command finishes the run, and the
    prompts it draws are exactly those of the uninterrupted run — across the epoch boundary
    (≈21 grounding prompts, 6 per step → epoch 1 starts in step 4)."""
    reference = [json.loads(x) for x in (submitted_run / "rl" / "metrics.jsonl").read_text().splitlines()]
    out = test_root / "runs"
    run = out / "resume"
    shutil.copytree(submitted_run / "sft", run / "sft")  # SFT finished: only RL reruns
    cmd = [sys.executable, "-m", "medmo_rl.run", "--stages", "stage4", f"output_dir={out}", "name=resume", *FAST]
    env = _env()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    latest = run / "rl" / "checkpoints" / "latest"
    deadline = time.monotonic() + 600
    while not (latest.exists() and latest.read_text().strip() == "step_000002"):
        assert proc.poll() is None, "run ended before its step-2 checkpoint"
        assert time.monotonic() < deadline, "no step-2 checkpoint within 10 minutes"
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "rl" / "final" / "DONE").exists()
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    resumed = [json.loads(x) for x in (run / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in resumed] == [1, 2, 3, 4]
    assert [x["sample_ids"] for x in resumed] == [x["sample_ids"] for x in reference]
    assert resumed[-1]["epoch"] > 1.0  # the run crossed an epoch boundary
    assert (run / "rl" / "final" / "DONE").exists()


def _rl_only(submitted_run, out: Path, name: str, extra: list[str]) -> tuple[list[str], Path]:
    """The RL stage alone on the job's SFT checkpoint, in its own run directory."""
    run = out / name
    shutil.copytree(submitted_run / "sft", run / "sft")
    return [sys.executable, "-m", "medmo_rl.run", "--stages", "stage4", f"output_dir={out}", f"name={name}", *FAST,
            *extra], run


def _rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "rl" / "metrics.jsonl").read_text().splitlines()]


def _wait_for(predicate, proc: subprocess.Popen, what: str, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout_s:.0f} s"
        time.sleep(0.3)


def _start_until_step_1(cmd: list[str], run: Path) -> tuple[subprocess.Popen, list[str], threading.Thread]:
    """Start an RL-only run, collect its output lines in a thread, return once step 1 is logged."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, text=True)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
    reader.start()
    metrics = run / "rl" / "metrics.jsonl"
    _wait_for(lambda: metrics.exists() and metrics.read_text().strip(), proc, "RL step 1")
    return proc, out, reader


ASYNC = ["rl.max_staleness=1", "rl.max_steps=6", "rl.monitor_every=2"]


def _gcs_address(driver_output: list[str]) -> str:
    """The local cluster a driver started, from its "Ray: started a local cluster … at HOST:PORT" line."""
    for line in driver_output:
        if line.startswith("Ray: started a local cluster"):
            return line.split(" at ")[-1].strip()
    raise AssertionError("the driver did not print its cluster's address: " + "".join(driver_output)[-2000:])


@pytest.fixture(scope="module")
def async_run(submitted_run, test_root):
    """rl.max_staleness=1: once step 1 is logged (the rollout thread is then collecting ahead), kill -9
    the rollout actor, ask the running job for a second rollout worker (python -m medmo_rl.control),
    and kill -9 the reward service; once step 2 is checkpointed, kill -9 a learner rank."""
    import psutil

    cmd, run = _rl_only(submitted_run, test_root / "runs", "async", ASYNC)
    proc, out, reader = _start_until_step_1(cmd, run)
    driver = psutil.Process(proc.pid)
    actors = [p for p in driver.children(recursive=True) if any("RolloutActor" in part for part in p.cmdline())]
    assert len(actors) == 1, [p.cmdline() for p in actors]
    actors[0].kill()
    grow = subprocess.run([sys.executable, "-m", "medmo_rl.control", "--address", _gcs_address(out), "--name",
                           "async", "--rollout-workers", "2"], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=120)
    assert grow.returncode == 0 and "rollout workers: 2" in grow.stdout, grow.stdout + grow.stderr
    services = [p for p in driver.children() if any("rewards.serve" in part for part in p.cmdline())]
    assert len(services) == 1, [p.cmdline() for p in driver.children()]
    services[0].kill()  # the uvicorn reward service: the driver restarts it, the client's retries cover the gap
    latest = run / "rl" / "checkpoints" / "latest"
    _wait_for(lambda: latest.exists() and latest.read_text().strip() == "step_000002", proc, "step-2 checkpoint")
    learners = [p for p in driver.children(recursive=True) if any("_LearnerActor" in part for part in p.cmdline())]
    assert len(learners) == 2, [p.cmdline() for p in driver.children(recursive=True)]
    learners[1].kill()  # one DDP rank: the driver rebuilds the group from step_000002 and replays from there
    assert proc.wait(timeout=900) == 0, "".join(out)[-4000:]
    reader.join(timeout=10)
    return run


def test_async_rl_rides_through_a_killed_rollout_actor_reward_service_and_learner(async_run, submitted_run):
    rows, reference = _rows(async_run), _rows(submitted_run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    # every prompt of every step answered once: the pool retried the dead actor's calls on its replacement
    assert [r["sample_ids"] for r in rows[:4]] == [r["sample_ids"] for r in reference]
    assert all(len(r["sample_ids"]) == 6 for r in rows)
    assert all(r["filter/groups_trained"] == 6 and r["errors/failed_requests"] == 0 for r in rows)
    assert rows[-1]["rollout/restarts"] == 1
    assert rows[-1]["rollout/num_workers"] == 2  # the resize reached the pool through the rollout thread
    # the rollout ran one step ahead: steps 2… trained on completions of the weights one version back,
    # weighted by the behaviour ratio; never more than the bound behind
    assert rows[0]["rollout/staleness_max"] == 0 and rows[0]["learn/is_weight_mean"] == 1.0  # fresh: exactly 1
    assert all(r["rollout/staleness_max"] <= 1 for r in rows) and any(r["rollout/staleness_mean"] > 0 for r in rows)
    assert all(r["weight_version"] == r["step"] for r in rows)
    assert any(r["time/overlap_s"] > 0 for r in rows)
    stale = [r for r in rows if r["rollout/staleness_mean"] == 1.0]
    assert stale and all(r["learn/is_weight_mean"] != 1.0 for r in stale)  # weights, not a constant 1
    assert (async_run / "rl" / "final" / "DONE").exists()
    summary = (async_run / "summary.md").read_text()
    assert "reward service (pid" in summary and "died (exit code -9); restarted at" in summary
    # the learner rank killed after the step-2 checkpoint: steps 3… ran again on a rebuilt group
    assert [r["faults/learner_restarts"] for r in rows] == [0, 0, 1, 1, 1, 1]
    assert re.search(r"learner rank \d died \(\w+\); rebuilt the learner group; replaying from step_000002", summary)
    faults = [json.loads(x) for x in (async_run / "rl" / "faults.jsonl").read_text().splitlines()]
    assert sorted(f["kind"] for f in faults) == ["learner", "reward_service", "rollout"], faults
    assert all(0 < f["recovery_s"] < 300 for f in faults), faults
    # the resource monitor sampled every 2 steps (the replayed ones included) and plotted
    samples = [json.loads(x) for x in (async_run / "rl" / "resources.jsonl").read_text().splitlines()]
    assert {r["step"] for r in samples} == {2, 4, 6}
    assert all(r["rss/driver"] > 0 and r["procs/RolloutActor"] >= 1 and r["rss/RolloutActor"] > 0 for r in samples)
    assert (async_run / "rl" / "resources.png").stat().st_size > 10_000
    assert "RL resources, growth per 100 steps (rl/resources.png): " in summary and "rss_per_proc/driver " in summary
    assert all(len(r["processes"]) >= 4 for r in samples)  # driver, 2 learners, ≥ 1 rollout actor, by pid


def test_async_rl_resumes_after_kill_with_identical_sample_ids(async_run, submitted_run, test_root):
    """kill -9 the driver after the step-2 checkpoint (the rollout thread is then collecting ahead);
    the same command finishes the run and draws the prompts of the uninterrupted runs."""
    cmd, run = _rl_only(submitted_run, test_root / "runs", "async-resume", ASYNC)
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    latest = run / "rl" / "checkpoints" / "latest"
    _wait_for(lambda: latest.exists() and latest.read_text().strip() == "step_000002", proc, "step-2 checkpoint")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "rl" / "final" / "DONE").exists()
    r = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    resumed = _rows(run)
    assert [x["step"] for x in resumed] == [1, 2, 3, 4, 5, 6]
    assert [x["sample_ids"] for x in resumed] == [x["sample_ids"] for x in _rows(async_run)]
    assert resumed[2]["rollout/staleness_max"] == 0  # step 3 after the resume: collected with the checkpoint's weights


def test_sigterm_checkpoints_at_the_step_boundary_and_the_rerun_resumes(async_run, submitted_run, test_root):
    """What `ray job stop` and a preempted node send: the driver finishes the step it is in,
    checkpoints, says how to resume and exits 75; the same command completes the run."""
    cmd, run = _rl_only(submitted_run, test_root / "runs", "sigterm", ASYNC)
    proc, out, reader = _start_until_step_1(cmd, run)
    proc.send_signal(signal.SIGTERM)  # the driver alone, not its Ray workers
    assert proc.wait(timeout=300) == 75, "".join(out)[-4000:]
    reader.join(timeout=10)
    text = "".join(out)
    steps = len(_rows(run))
    assert f"stopped by SIGTERM after RL step {steps}" in text and "Run the same command again" in text
    assert 1 <= steps < 6 and not (run / "rl" / "final" / "DONE").exists()
    assert (run / "rl" / "checkpoints" / "latest").read_text().strip() == f"step_{steps:06d}"
    r = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    assert [x["sample_ids"] for x in _rows(run)] == [x["sample_ids"] for x in _rows(async_run)]
