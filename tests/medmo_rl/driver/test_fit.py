"""The fit rule of medmo_rl/driver/fit.py (pure) and where the run directory goes (cluster.py)."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from medmo_rl.config import load_config
from medmo_rl.driver.run_dir import resolve_output_dir
from medmo_rl.driver.fit import (Reservation, Supply, cpu_scale, fit, max_rollout_workers, rl_demand, scale_rl,
                                 scale_sft, scaled_cpus, sft_demand)


def test_tiny_default_demand_and_scaling_on_a_two_cpu_head():
    cfg = load_config()
    # 2 learners × 1 + 1 rollout worker × 1 + 1 spare rollout worker × 1 (uvicorn reserves nothing) = 4
    demand = rl_demand(cfg)
    assert [(r.what, r.count, r.cpus, r.gpus) for r in demand] == [
        ("learner", 2, 1.0, 0.0), ("rollout worker", 1, 1.0, 0.0), ("spare rollout worker", 1, 1.0, 0.0)]
    f = fit("stage4", demand, Supply(cpus=2, gpus=0), fractional=True)
    assert (f.demand_cpus, f.factor, f.problem) == (4.0, 0.5, "")
    scaled = scale_rl(cfg, f.factor)
    assert (scaled.rl.cpus_per_learner, scaled.rollout.cpus_per_worker) == (0.5, 0.5)
    # learners 2 × 0.5 + the pool resized to 2 workers × 0.5 = 2.0: the resize fits the head
    assert 2 * scaled.rl.cpus_per_learner + 2 * scaled.rollout.cpus_per_worker <= 2.0
    assert (scaled.rl.num_learners, scaled.rollout.num_workers) == (2, 1)  # counts kept
    # SFT: 2 Ray Train workers × 1 CPU fit 2 CPUs as configured
    sf = fit("stage2", sft_demand(cfg.sft), Supply(cpus=2, gpus=0), fractional=True)
    assert (sf.demand_cpus, sf.factor) == (2.0, 1.0)
    assert scale_sft(cfg.sft, sf.factor) == cfg.sft


def test_the_largest_rollout_pool_a_cluster_holds():
    # the tiny default scaled onto a 2-CPU head: (2 − 2 learners × 0.5) / 0.5 = 2 workers
    scaled = scale_rl(load_config(), 0.5)
    n, why = max_rollout_workers(scaled, Supply(cpus=2, gpus=0))
    assert n == 2 and "the rest of the RL stage reserves 1 CPUs" in why and "rollout.cpus_per_worker" in why
    # unscaled on 8 CPUs: (8 − 2) / 1 = 6; Serve replicas count as the rest too: (8 − 2 − 2 × 0.5) / 1 = 5
    assert max_rollout_workers(load_config(), Supply(cpus=8, gpus=0))[0] == 6
    serve = load_config(None, ["reward.service=serve", "reward.replicas=2", "reward.cpus_per_replica=0.5"])
    assert max_rollout_workers(serve, Supply(cpus=8, gpus=0))[0] == 5
    # GPU workers: 4 GPUs, learners on 2 of them, 1 GPU per worker → 2, whatever the CPUs allow
    gpu = load_config(None, ["rl.use_gpu=true", "rollout.gpus_per_worker=1"])
    assert max_rollout_workers(gpu, Supply(cpus=64, gpus=4))[0] == 2
    assert max_rollout_workers(scaled, Supply(cpus=0.5, gpus=0))[0] == 0  # never negative


def test_fits_as_configured_on_a_big_cluster():
    cfg = load_config()
    f = fit("stage4", rl_demand(cfg), Supply(cpus=8, gpus=0), fractional=True)
    assert f.factor == 1.0 and scale_rl(cfg, f.factor) == cfg


def test_serve_replicas_count_and_headroom_is_configurable():
    cfg = load_config(overrides=["reward.service=serve", "reward.replicas=2", "reward.cpus_per_replica=0.25",
                                 "cluster.rollout_headroom=0"])
    # 2 × 1 + 1 × 1 + 2 × 0.25 = 3.5 → factor 3 / 3.5 = 0.857142…, rounded down to 1e-4 per actor
    f = fit("stage4", rl_demand(cfg), Supply(cpus=3, gpus=0), fractional=True)
    assert f.demand_cpus == 3.5 and f.factor == pytest.approx(6 / 7)
    s = scale_rl(cfg, f.factor)
    assert (s.rl.cpus_per_learner, s.rollout.cpus_per_worker, s.reward.cpus_per_replica) == (0.8571, 0.8571, 0.2142)


def test_scaled_reservations_never_exceed_supply():
    # rounding to nearest would overshoot: 3 × round(1 · 2/3, 4) = 3 × 0.6667 = 2.0001 > 2
    assert cpu_scale(3, 2) == pytest.approx(2 / 3) and scaled_cpus(1.0, 2 / 3) == 0.6666
    rng = random.Random(0)
    for _ in range(500):
        demand = [Reservation(str(i), rng.randint(1, 9), rng.choice([0.25, 0.5, 1, 2, 3.3]), 0, ()) for i in range(3)]
        supply = Supply(cpus=rng.randint(1, 16), gpus=0)
        f = fit("s", demand, supply, fractional=True)
        used = sum(r.count * scaled_cpus(r.cpus, f.factor) for r in demand)
        assert used <= supply.cpus + 1e-9
        actors = sum(r.count for r in demand)
        assert f.factor == 1 or used >= supply.cpus - actors * 1e-4  # at most one quantum lost per actor


def test_gpu_demand_beyond_supply_fails_naming_demand_supply_and_keys():
    cfg = load_config(overrides=["rl.use_gpu=true"])
    f = fit("stage4", rl_demand(cfg), Supply(cpus=2, gpus=0), fractional=True)
    assert "reserves 4 CPUs and 2 GPUs" in f.problem and "offers 2 CPUs and 0 GPUs" in f.problem
    assert "never shared fractionally" in f.problem
    assert "rl.num_learners, rl.cpus_per_learner, rl.use_gpu" in f.problem.split("Change ")[1]
    assert "rollout.num_workers" not in f.problem.split("Change ")[1]  # it asks for no GPU


def test_cpu_shortfall_fails_when_fractional_is_off():
    cfg = load_config(overrides=["cluster.fractional_cpus=false"])
    f = fit("stage4", rl_demand(cfg), Supply(cpus=2, gpus=0), fractional=False)
    assert "reserves 4 CPUs" in f.problem and "offers 2 CPUs" in f.problem
    assert "cluster.fractional_cpus" in f.problem.split("Change ")[1] and "rl.cpus_per_learner" in f.problem
    assert fit("stage4", rl_demand(cfg), Supply(cpus=0, gpus=0), fractional=True).problem  # nothing to share


@pytest.mark.parametrize("cwd, env, output_dir, want, moved", [
    ("/home/u/medmo", {}, "runs", "/home/u/medmo/runs", False),
    ("/home/u/session_3", {}, "runs", "/home/u/session_3/runs", False),  # not a job: a folder like any other
    ("/tmp/ray/session_2026_01_01/runtime_resources/working_dir_files/_ray_pkg_ab12", {"MEDMO_OUTPUT_ROOT": "/data/m"},
     "runs", "/data/m/runs", True),
    ("/tmp/ray/session_2026_01_01/runtime_resources/working_dir_files/_ray_pkg_ab12", {}, "/abs/out", "/abs/out",
     False),
    ("/tmp/ray/session_2026_01_01/x", {"RAY_JOB_CONFIG_JSON_ENV_VAR": "{}", "MEDMO_OUTPUT_ROOT": "/data/m"}, "a/b",
     "/data/m/a/b", True),
])
def test_output_dir_outlives_rays_temporary_copy(cwd, env, output_dir, want, moved):
    path, why = resolve_output_dir(output_dir, Path(cwd), env)
    assert path == Path(want) and bool(why) == moved


def test_output_dir_default_root_is_in_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    path, why = resolve_output_dir("runs", Path("/r/session_1/runtime_resources/working_dir_files/_ray_pkg_1"), {})
    assert path == tmp_path / "medmo_rl" / "runs" and "MEDMO_OUTPUT_ROOT" in why


# -- cluster.check_fit with an autoscaler (Ray's answers replaced: no autoscaler runs here) ------
def test_autoscaler_is_asked_for_the_unscaled_actors_and_the_grown_cluster_is_used(monkeypatch):
    import ray.autoscaler.sdk as sdk

    from medmo_rl.driver import cluster

    requested = []
    monkeypatch.setattr(sdk, "request_resources", lambda bundles: requested.append(bundles))
    supplies = iter([Supply(2, 0), Supply(2, 0), Supply(8, 2)])  # a GPU node joins on the third look
    monkeypatch.setattr(cluster, "cluster_supply", lambda: next(supplies))
    monkeypatch.setattr(cluster.time, "sleep", lambda s: None)
    cfg = load_config(overrides=["rl.use_gpu=true", "cluster.autoscaler_wait_s=60"])
    f = cluster.check_fit("stage4", rl_demand(cfg), cfg.cluster)
    assert (f.factor, f.supply, f.problem) == (1.0, Supply(8, 2), "")
    assert requested == [[{"CPU": 1.0, "GPU": 1.0}] * 2 + [{"CPU": 1.0}] * 2]  # learners, rollout + spare


def test_autoscaler_wait_ends_with_the_same_error(monkeypatch):
    from medmo_rl.driver import cluster

    monkeypatch.setattr("ray.autoscaler.sdk.request_resources", lambda bundles: None)
    monkeypatch.setattr(cluster, "cluster_supply", lambda: Supply(2, 0))
    cfg = load_config(overrides=["rl.use_gpu=true", "cluster.autoscaler_wait_s=0.3"])
    with pytest.raises(cluster.ClusterTooSmall, match="reserves 4 CPUs and 2 GPUs"):
        cluster.check_fit("stage4", rl_demand(cfg), cfg.cluster)
    # CPUs short only: after the wait the stage is scaled instead
    cfg = load_config(overrides=["cluster.autoscaler_wait_s=0.3"])
    assert cluster.check_fit("stage4", rl_demand(cfg), cfg.cluster).factor == 0.5
