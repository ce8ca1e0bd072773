"""Where the RL stage gets its reward service from (config `reward.service`):

  uvicorn  a `python -m rewards.serve` child process on a free loopback port (default; cheapest)
  serve    Ray Serve replicas of the same app inside the running Ray cluster (`reward.replicas`)
  url      an already running service at `reward.url`

Either way the learner side talks plain HTTP through `rewards.client.RewardClient`.

A uvicorn child that dies (kill -9, OOM) is restarted on the same port by a watcher thread within
about a second plus its start-up; the client's retries (reward.retries, exponential backoff) cover
the gap, and what they cannot cover is scored NaN (zero advantage, counted). Each death and
restart is recorded in the run's fault log (medmo_rl/faults.py) with its time and recovery time. (Ray Serve replaces
its own replicas.)
"""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from medmo_rl.config import RunConfig, dump_yaml
from medmo_rl.faults import FaultLog
from rewards.serve import deploy_serve

log = logging.getLogger("medmo_rl")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the driver dies, even by kill -9 (Linux)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: the context manager's __exit__ still stops it


def wait_healthy(url: str, timeout_s: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"reward service exited with code {proc.returncode} before it was healthy:\n{tail}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"reward service at {url} not healthy after {timeout_s:.0f} s")


class RewardService:
    """Context manager: start (or attach to) the reward service, yield its URL, stop what it started."""

    def __init__(self, cfg: RunConfig, work_dir: Path, *, watch_interval_s: float = 0.5,
                 faults: FaultLog | None = None):
        self.cfg, self.work_dir = cfg, Path(work_dir)
        self.url = ""
        self.faults = faults if faults is not None else FaultLog()  # deaths and restarts, for summary.md
        self._proc: subprocess.Popen | None = None
        self._cmd: list[str] = []
        self._stop = threading.Event()
        self._watch_interval_s = watch_interval_s
        self._watcher: threading.Thread | None = None

    def _start_child(self) -> None:
        log_path = self.work_dir / "reward_service.log"
        self._proc = subprocess.Popen(self._cmd, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT,
                                      env=dict(os.environ), preexec_fn=_die_with_parent)
        wait_healthy(self.url, 60, self._proc, log_path)

    def _watch(self) -> None:
        """Restart the uvicorn child whenever it exits while the stage still needs it."""
        while not self._stop.wait(self._watch_interval_s):
            code = self._proc.poll()
            if code is None:
                continue
            t0, pid = time.monotonic(), self._proc.pid
            what = f"reward service (pid {pid}) died (exit code {code})"
            try:
                self._start_child()
            except (RuntimeError, TimeoutError) as exc:
                log.error("%s", self.faults.record("reward_service", what=what, action=f"restart failed: {exc}").line())
                return  # the client's failures now count towards reward.max_failed_fraction and stop the run
            fault = self.faults.record("reward_service", what=what,
                                       action=f"restarted at {self.url} (pid {self._proc.pid})",
                                       recovery_s=time.monotonic() - t0)
            log.warning("%s", fault.line())

    def __enter__(self) -> "RewardService":
        rc = self.cfg.reward
        if rc.service == "url":
            if not rc.url:
                raise ValueError("reward.service is 'url' but reward.url is empty")
            self.url = rc.url.rstrip("/")
        elif rc.service == "serve":
            self.url = deploy_serve(rc, rc.replicas, "127.0.0.1", _free_port(), rc.cpus_per_replica)
        else:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            cfg_path = self.work_dir / "reward_config.yaml"
            cfg_path.write_text(dump_yaml(self.cfg))
            port = _free_port()
            self._cmd = [sys.executable, "-m", "rewards.serve", "--host", "127.0.0.1", "--port", str(port),
                         "--config", str(cfg_path)]
            self.url = f"http://127.0.0.1:{port}"  # a restart reuses the port: the client's URL stays valid
            self._start_child()
            self._watcher = threading.Thread(target=self._watch, name="reward-service-watch", daemon=True)
            self._watcher.start()
            return self
        wait_healthy(self.url, 60)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=70)  # it may be waiting for a restarted child to be healthy
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self.cfg.reward.service == "serve":
            from ray import serve

            serve.shutdown()
