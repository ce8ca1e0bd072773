"""LearnerGroup's waits: a dead rank fails the call at once, a hung one within learner_timeout_s."""
from __future__ import annotations

import os
import signal
import time

import pytest

from medmo_rl.driver.learner_group import LearnerLost, wait_all

pytestmark = pytest.mark.integration


@pytest.fixture
def ranks(ray_local):
    """Two fresh actors per test: an actor runs its calls one at a time, and a test leaves its
    ranks blocked."""
    class Rank:  # defined here so Ray ships it by value (workers cannot import test modules)
        def pid(self) -> int:
            return os.getpid()

        def wait(self, seconds: float) -> str:  # a rank blocked in a collective whose peer died
            time.sleep(seconds)
            return "done"

        def fail(self, seconds: float, message: str) -> str:  # a rank whose collective broke
            time.sleep(seconds)
            raise RuntimeError(message)

    actor = ray_local.remote(num_cpus=0)(Rank)
    made = [actor.remote(), actor.remote()]
    yield made
    for a in made:
        ray_local.kill(a)


def test_a_dead_rank_fails_the_wait_while_its_peer_still_blocks(ray_local, ranks):
    names = ["learner rank 0", "learner rank 1"]
    pid1 = ray_local.get(ranks[1].pid.remote())
    assert wait_all([a.wait.remote(0.1) for a in ranks], names=names, what="a learner step", timeout_s=60) == ["done"] * 2
    refs = [ranks[0].wait.remote(120), ranks[1].wait.remote(120)]
    time.sleep(1.0)
    os.kill(pid1, signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(LearnerLost, match=r"a learner step: learner rank 1 died \(\w*ActorDied\w*\)"):
        wait_all(refs, names=names, what="a learner step", timeout_s=300)
    assert time.monotonic() - t0 < 60  # not the 120 s rank 0 still sleeps


def test_a_wait_longer_than_the_timeout_names_who_is_late(ray_local, ranks):
    with pytest.raises(LearnerLost, match=r"saving /x: learner rank 0 did not answer within rl.learner_timeout_s=1"):
        wait_all([ranks[0].wait.remote(30)], names=["learner rank 0"], what="saving /x", timeout_s=1.0)


def test_a_broken_collective_is_blamed_on_the_peer_that_died(ray_local, ranks):
    """What gloo does: the surviving rank raises "Connection reset by peer" before Ray has marked
    the killed one dead; the wait names the dead peer instead of the survivor's error."""
    pid = ray_local.get(ranks[1].pid.remote())
    refs = [ranks[0].fail.remote(2.0, "gloo: Read error: Connection reset by peer"), ranks[1].wait.remote(120)]
    time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(LearnerLost, match=r"a learner step: learner rank 1 died"):
        wait_all(refs, names=["learner rank 0", "learner rank 1"], what="a learner step", timeout_s=300)


def test_an_error_with_every_peer_alive_is_raised_as_it_is(ray_local, ranks):
    refs = [ranks[0].fail.remote(0.0, "a bug in the loss"), ranks[1].wait.remote(0.5)]
    with pytest.raises(ray_local.exceptions.RayTaskError, match="a bug in the loss"):
        wait_all(refs, names=["learner rank 0", "learner rank 1"], what="a learner step", timeout_s=60, grace_s=5)
