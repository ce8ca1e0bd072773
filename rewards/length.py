"""Soft overlong punishment (DAPO, Yu et al. 2025, "Overlong Reward Shaping").

With L the completion length in tokens, L_max the generation limit and L_cache the soft band:

    R_length(L) = 0                                 if L ≤ L_max − L_cache
                = (L_max − L_cache − L) / L_cache   if L_max − L_cache < L ≤ L_max
                = −1                                if L > L_max

so the penalty ramps linearly from 0 to −1 over the last L_cache tokens.
Garbage never raises: a length that is not a finite number, or negative, scores −1 (it cannot be
shown to fit), as does any length against a NaN L_max; a negative or non-finite L_cache counts
as 0 (a hard cut at L_max).
"""
from __future__ import annotations

import math
import numbers


def _real(x: object) -> float:
    if type(x) is float:  # the common cases first
        return x
    if type(x) is not int and (not isinstance(x, numbers.Real) or isinstance(x, bool)):
        return math.nan
    try:
        return float(x)
    except OverflowError:  # an int past float range
        return math.inf if x > 0 else -math.inf


def soft_overlong_punishment(num_tokens: int, max_completion_len: int, cache_len: int) -> float:
    """DAPO's R_length (module docstring); in [−1, 0]."""
    length, l_max, l_cache = _real(num_tokens), _real(max_completion_len), _real(cache_len)
    if not (math.isfinite(length) and length >= 0) or math.isnan(l_max):
        return -1.0
    if not (math.isfinite(l_cache) and l_cache > 0):
        l_cache = 0.0
    if length <= l_max - l_cache:
        return 0.0
    if length <= l_max:
        return max(-1.0, (l_max - l_cache - length) / l_cache)
    return -1.0
