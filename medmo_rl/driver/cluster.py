"""The Ray cluster a job runs in: joining it (or starting a local one), checking that a stage fits
it (rule: medmo_rl/driver/fit.py), noticing that it went away, and a run directory that outlives it."""
from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import ray

from medmo_rl.config import ClusterConfig
from medmo_rl.driver.fit import Fit, Reservation, Supply, fit

RAY_NAMESPACE = "medmo"
log = logging.getLogger("medmo_rl")


def init_ray(cluster: ClusterConfig, temp_dir: Path | None = None) -> str:
    """Join the cluster this job runs in, or start a local one.

    RAY_ADDRESS set (as `ray job submit` does) → join it; cluster.address an explicit address →
    join that; "auto"/"local" otherwise → a fresh local cluster with cluster.num_cpus logical CPUs
    (never a stale cluster some other process left on this machine).
    Workers' output reaches this console (log_to_driver): their tracebacks, and the SFT workers'
    progress bars (ray.experimental.tqdm_ray), which only the driver's log monitor renders.
    """
    if ray.is_initialized():
        return "already initialised"
    address = os.environ.get("RAY_ADDRESS") or (cluster.address if cluster.address not in ("auto", "local") else "")
    if address:
        ray.init(address=address, namespace=RAY_NAMESPACE, log_to_driver=True)
        return f"joined {address}"
    if not cluster.allow_local:
        raise RuntimeError("no Ray cluster to join (RAY_ADDRESS unset) and cluster.allow_local is false")
    # Ray 2.60 turns token auth on once ~/.ray/auth_token exists; a loopback-only local cluster needs none
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # inherited by the cluster's workers: each model load would print a transformers bar between ours
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    kw = {"_temp_dir": str(temp_dir)} if temp_dir else {}
    # the dashboard serves the State API, which Ray Train's placement-group cleaner polls every second
    # (without it the cleaner cannot work and logs a warning each time)
    ctx = ray.init(address="local", num_cpus=cluster.num_cpus, include_dashboard=True, log_to_driver=True,
                   namespace=RAY_NAMESPACE, **kw)
    # its address is what `python -m medmo_rl.control --address …` needs to reach this run
    return f"started a local cluster with {cluster.num_cpus} logical CPUs at {ctx.address_info['gcs_address']}"


# -- does a stage fit? ---------------------------------------------------------------------------
class ClusterTooSmall(RuntimeError):
    """A stage's reservations cannot fit the cluster (the message names demand, supply and keys)."""


def cluster_supply() -> Supply:
    total = ray.cluster_resources()
    return Supply(cpus=float(total.get("CPU", 0.0)), gpus=float(total.get("GPU", 0.0)))


def check_fit(stage: str, demand: Sequence[Reservation], cluster: ClusterConfig, *, wait: bool = True) -> Fit:
    """The stage's `Fit` on this cluster (medmo_rl/driver/fit.py has the rule); raises ClusterTooSmall.

    With cluster.autoscaler_wait_s > 0 (and `wait`) the autoscaler is first asked for the stage's
    unscaled actors (ray.autoscaler.sdk.request_resources: it adds nodes only for pending demand
    or such a request) and given that long to make them fit; what remains short is then scaled or
    refused by the same rule as on a fixed cluster.
    """
    supply = cluster_supply()
    result = fit(stage, demand, supply, fractional=cluster.fractional_cpus)
    if wait and cluster.autoscaler_wait_s > 0 and (result.problem or result.factor < 1):
        from ray.autoscaler.sdk import request_resources

        bundles = [{k: v for k, v in (("CPU", r.cpus), ("GPU", r.gpus)) if v} for r in demand for _ in range(r.count)]
        request_resources(bundles=[b for b in bundles if b])
        log.info("%s: the cluster offers %g CPUs / %g GPUs of the %g / %g it needs; waiting up to %.0f s for the "
                 "autoscaler (cluster.autoscaler_wait_s)", stage, supply.cpus, supply.gpus, result.demand_cpus,
                 result.demand_gpus, cluster.autoscaler_wait_s)
        deadline = time.monotonic() + cluster.autoscaler_wait_s
        while time.monotonic() < deadline and (result.problem or result.factor < 1):
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
            result = fit(stage, demand, cluster_supply(), fractional=cluster.fractional_cpus)
    if result.problem:
        raise ClusterTooSmall(result.problem)
    return result


def log_scaling(result: Fit) -> None:
    if result.factor < 1:
        log.warning("%s: the cluster has %g CPUs, the config reserves %g: scaling every CPU reservation of the "
                    "stage by %.4g (Ray CPUs are logical, each actor still runs >= 1 thread; "
                    "cluster.fractional_cpus=false stops instead)", result.stage, result.supply.cpus,
                    result.demand_cpus, result.factor)


# -- a driver whose cluster went away exits ------------------------------------------------------
EXIT_CLUSTER_LOST = 75  # EX_TEMPFAIL: rerunning the same command on a live cluster resumes the run
EXIT_PREEMPTED = 75  # the same: stopped by SIGTERM at a checkpoint (rl_loop.Preempted)


def _gcs_answers(host: str, port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def start_gcs_watchdog(lost_after_s: float, *, interval_s: float = 5.0) -> threading.Thread | None:
    """Exit this process (code 75) once the cluster's GCS has refused connections for `lost_after_s`.

    Why: after `ray stop` or the loss of the head node a driver blocked in ray.get (or one that
    `ray job submit` started) can wait forever with nothing left to answer it. A TCP connect to
    the GCS port is the probe: cheap, bounded by a timeout, and independent of Ray's own client.
    os._exit, because the main thread may be stuck inside Ray; the uvicorn child dies with us.
    """
    if lost_after_s <= 0:
        return None
    address = ray.get_runtime_context().gcs_address
    host, port = address.rsplit(":", 1)
    interval_s = min(interval_s, lost_after_s / 3)

    def watch() -> None:
        last_ok = time.monotonic()
        while True:
            time.sleep(interval_s)
            if _gcs_answers(host, int(port), timeout_s=max(0.5, interval_s)):
                last_ok = time.monotonic()
            elif time.monotonic() - last_ok >= lost_after_s:
                msg = (f"the Ray cluster is gone: its GCS at {address} has not answered for {lost_after_s:g} s "
                       f"(ray stop? head node lost?). Exiting with code {EXIT_CLUSTER_LOST}; rerun the same command "
                       f"on a live cluster to resume (cluster.lost_after_s sets the wait).")
                print(f"error: {msg}", file=sys.stderr, flush=True)  # not via logging: os._exit flushes nothing
                os._exit(EXIT_CLUSTER_LOST)

    thread = threading.Thread(target=watch, name="gcs-watchdog", daemon=True)
    thread.start()
    return thread
