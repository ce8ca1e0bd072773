"""sft/mixture.py: deterministic, resumable, weighted, without repeats within a dataset's epoch."""
from __future__ import annotations

from collections import Counter

import pytest

from sft.mixture import BLOCK, MixtureStream, steps_for_epochs


def test_same_seed_same_stream_and_resume_from_any_position():
    full = MixtureStream([10, 7, 3], [1.0, 2.0, 0.5], seed=5).take(0, 300)
    again = MixtureStream([10, 7, 3], [1.0, 2.0, 0.5], seed=5)
    assert again.take(0, 123) + again.take(123, 300) == full
    fresh = MixtureStream([10, 7, 3], [1.0, 2.0, 0.5], seed=5)  # as after a restart
    assert fresh.take(200, 300) == full[200:]
    assert MixtureStream([10, 7, 3], [1.0, 2.0, 0.5], seed=6).take(0, 300) != full


def test_resume_across_an_rng_block_boundary():
    s = MixtureStream([5, 9], [1.0, 1.0], seed=0)
    ref = s.take(BLOCK - 10, BLOCK + 10)
    assert MixtureStream([5, 9], [1.0, 1.0], seed=0).take(BLOCK - 3, BLOCK + 10) == ref[7:]


def test_weights_set_the_proportions():
    picks = MixtureStream([50, 50], [3.0, 1.0], seed=1).take(0, 8000)
    share = Counter(k for k, _ in picks)[0] / len(picks)
    assert share == pytest.approx(0.75, abs=0.02)


def test_each_dataset_epoch_is_a_permutation():
    picks = MixtureStream([10, 4], [1.0, 1.0], seed=2).take(0, 200)
    first = [i for k, i in picks if k == 0]
    assert sorted(first[:10]) == list(range(10)) and sorted(first[10:20]) == list(range(10))
    assert first[:10] != first[10:20]  # reshuffled each epoch
    second = [i for k, i in picks if k == 1]
    assert sorted(second[:4]) == list(range(4))


@pytest.mark.parametrize("sizes,weights", [([3], [0.0]), ([3, 4], [1.0]), ([0], [1.0]), ([2], [float("nan")])])
def test_bad_mixtures_are_refused(sizes, weights):
    with pytest.raises(ValueError):
        MixtureStream(sizes, weights, seed=0)


def test_steps_for_epochs():
    assert steps_for_epochs([100, 60], 1.0, 16) == 10
    assert steps_for_epochs([100, 60], 0.5, 16) == 5
    assert steps_for_epochs([1], 0.01, 16) == 1
