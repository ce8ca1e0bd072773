"""A run directory that cannot hold a run stops it before any stage, naming the path (issue 16):
unwritable (a path under a file, a read-only mount) or nearly full (a 64 KiB tmpfs)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from medmo_rl.driver.run_dir import BadRunDir, check_run_dir

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def tiny_mount(tmp_path):
    """A 64 KiB tmpfs (real mounts need root, which this machine's tests run as)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_path_under_a_file_is_refused_naming_it(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadRunDir, match=r"run directory .*/file/runs/tiny is not writable: .*output_dir="):
        check_run_dir(tmp_path / "file" / "runs" / "tiny", min_free_gib=0.0)


def test_a_nearly_full_disk_is_refused_with_its_free_space(tiny_mount):
    with pytest.raises(BadRunDir, match=r"/mnt/tiny has 6.1e-05 GiB free, less than min_free_gib=1 "):
        check_run_dir(tiny_mount / "tiny", min_free_gib=1.0)
    check_run_dir(tiny_mount / "ok", min_free_gib=0.0)  # the same mount passes when nothing is required
    assert not (tiny_mount / "ok" / ".write_test").exists()  # the probe file is gone again


def test_a_read_only_run_dir_stops_the_run_before_any_stage(tiny_mount, tmp_path):
    (tiny_mount / "runs").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_mount)], check=True)
    r = subprocess.run([sys.executable, "-m", "medmo_rl.run", f"output_dir={tiny_mount / 'runs'}", "min_free_gib=0"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert f"error: run directory {tiny_mount / 'runs' / 'tiny'} is not writable: Read-only file system" in r.stderr
    assert "Ray:" not in r.stdout  # stopped before joining or starting a cluster
