"""Where the run directory goes, and whether it can hold a run (pure: no Ray, so `--dry-run` can
print the same path the job will use).

    run_dir, why = run_dir_for(cfg)                    # what the job and `--dry-run` both print
    check_run_dir(run_dir, cfg.min_free_gib)           # BadRunDir before any stage runs
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from medmo_rl.config import RunConfig

OUTPUT_ROOT_ENV = "MEDMO_OUTPUT_ROOT"


def in_ray_temp_copy(cwd: Path, environ: Mapping[str, str]) -> bool:
    """Is `cwd` a runtime_env copy that Ray deletes with its session? (ray job submit --working-dir
    runs the job in <ray temp>/session_*/runtime_resources/working_dir_files/_ray_pkg_<hash>/.)
    Also true for any cwd under a session_* folder of a `ray job submit` entrypoint (the job
    supervisor sets RAY_JOB_CONFIG_JSON_ENV_VAR for it)."""
    parts = cwd.parts
    return "runtime_resources" in parts or (
        "RAY_JOB_CONFIG_JSON_ENV_VAR" in environ and any(p.startswith("session_") for p in parts))


class BadRunDir(RuntimeError):
    """The run directory cannot hold a run: it says which path, what is wrong and what to change."""


def check_run_dir(run_dir: Path, min_free_gib: float) -> None:
    """Before any stage: the run directory exists (or can be made), takes a written file, and has
    at least `min_free_gib` GiB free — else BadRunDir naming the path (nothing has trained yet)."""
    fix = "set output_dir=… (or $MEDMO_OUTPUT_ROOT under ray job submit) to a writable folder"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        with open(probe, "wb") as f:  # a read-only mount or a full disk fails here, not at step 1000
            f.write(b"ok")
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as exc:
        raise BadRunDir(f"run directory {run_dir} is not writable: {exc.strerror or exc} ({fix})") from None
    free = shutil.disk_usage(run_dir).free / 2**30
    if free < min_free_gib:
        raise BadRunDir(f"run directory {run_dir} has {free:.3g} GiB free, less than min_free_gib={min_free_gib:g} "
                        f"({fix}, or lower min_free_gib)")


def resolve_output_dir(output_dir: str, cwd: Path, environ: Mapping[str, str]) -> tuple[Path, str]:
    """→ (absolute output dir, why it is not cwd/output_dir — "" when it is).

    An absolute output_dir is kept. A relative one resolves against `cwd`, except inside Ray's
    temporary working-dir copy: there it resolves against $MEDMO_OUTPUT_ROOT (default ~/medmo_rl),
    so the default `runs` becomes ~/medmo_rl/runs. On a multi-node cluster point it (or
    output_dir) at storage every node mounts.
    """
    path = Path(output_dir).expanduser()
    if path.is_absolute():
        return path, ""
    if not in_ray_temp_copy(cwd, environ):
        return (cwd / path).resolve(), ""
    root = Path(environ.get(OUTPUT_ROOT_ENV) or Path.home() / "medmo_rl").expanduser()
    return (root / path).resolve(), (f"output_dir {output_dir!r} would resolve inside Ray's temporary copy of the "
                                     f"working dir ({cwd}), deleted with the cluster: using ${OUTPUT_ROOT_ENV} "
                                     f"or ~/medmo_rl instead")


def run_dir_for(cfg: RunConfig) -> tuple[Path, str]:
    """→ (the absolute run directory the job uses, why it is not cwd/output_dir/name — "" when it is)."""
    output_dir, moved = resolve_output_dir(cfg.output_dir, Path.cwd(), os.environ)
    return output_dir / cfg.name, moved
