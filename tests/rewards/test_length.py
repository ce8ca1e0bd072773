import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewards.length import soft_overlong_punishment


@pytest.mark.parametrize(
    "length, want",
    [(0, 0.0), (1536, 0.0), (1537, -0.001953125), (1792, -0.5), (2047, -511 / 512), (2048, -1.0), (2049, -1.0)],
)
def test_dapo_anchors(length, want):
    # L_max 2048, L_cache 512: 0 up to 1536, then (1536 − L)/512, −1 beyond 2048
    assert soft_overlong_punishment(length, 2048, 512) == want


def test_zero_cache_is_a_hard_cut():
    assert soft_overlong_punishment(100, 100, 0) == 0.0
    assert soft_overlong_punishment(101, 100, 0) == -1.0


def test_garbage_lengths_score_minus_one():
    for junk in (math.nan, math.inf, -1, None, "12", True, 10**400):
        assert soft_overlong_punishment(junk, 2048, 512) == -1.0
    assert soft_overlong_punishment(10, 10**400, 512) == 0.0  # an absurd limit is still a number


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.integers(-10, 10**6), st.floats(), st.integers()), st.integers(-5, 5000) | st.integers(),
       st.one_of(st.integers(-5, 5000), st.floats(), st.integers()))
def test_always_in_range(length, l_max, l_cache):
    v = soft_overlong_punishment(length, l_max, l_cache)
    assert -1.0 <= v <= 0.0
