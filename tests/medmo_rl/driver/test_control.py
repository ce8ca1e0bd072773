"""The control actor's resize rule (a plain class: no Ray needed to test it)."""
from __future__ import annotations

import pytest

from medmo_rl.driver.control import Control, ResizeRefused


def test_a_resize_beyond_what_the_cluster_holds_is_refused_and_the_size_kept():
    c = Control(1, max_workers=2, why="the cluster has 2 CPUs")
    assert c.set_rollout_workers(2) == 2 and c.get_rollout_workers() == 2
    with pytest.raises(ResizeRefused, match=r"3 rollout workers do not fit: the cluster has 2 CPUs, so at most 2 "
                                            r"fit; the pool stays at 2\. Add nodes"):
        c.set_rollout_workers(3)
    assert c.get_rollout_workers() == 2
    with pytest.raises(ResizeRefused, match="must be >= 1"):
        c.set_rollout_workers(0)


def test_an_autoscaling_cluster_has_no_limit():
    assert Control(1, max_workers=None).set_rollout_workers(64) == 64
