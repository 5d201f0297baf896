"""Exponential decay arithmetic: exact at any instant, computed lazily from a stored value."""

import math


def decay_factor(elapsed_ms: float, half_life_ms: int) -> float:
    """The share of a value left after ``elapsed_ms``: exactly 0.5 after one half-life."""
    return float(2.0 ** (-elapsed_ms / half_life_ms))


def time_to_fall(value: float, limit: float, half_life_ms: int) -> float | None:
    """Milliseconds until ``value`` decays below ``limit``; ``None`` if it never does.

    The closed form of ``value * 2**(-t/H) = limit``: ``t = H * log2(value / limit)``.
    """
    if value < limit:
        return 0.0
    if limit <= 0:
        return None
    return half_life_ms * math.log2(value / limit)
