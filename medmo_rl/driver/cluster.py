"""Joining the Ray cluster a job runs in (or starting a local one)."""
from __future__ import annotations

import os
from pathlib import Path

import ray

from medmo_rl.config import ClusterConfig

RAY_NAMESPACE = "medmo"


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
    ray.init(address="local", num_cpus=cluster.num_cpus, include_dashboard=True, log_to_driver=True,
             namespace=RAY_NAMESPACE, **kw)
    return f"started a local cluster with {cluster.num_cpus} logical CPUs"
