"""Exponential decay arithmetic: exact at any instant, computed lazily from a stored value."""

import math
from collections.abc import Iterable


def decay_factor(elapsed_ms: float, half_life_ms: int) -> float:
    """The share of a value left after ``elapsed_ms``: exactly 0.5 after one half-life."""
    # math.pow, not ``**``: compiled, a native call on unboxed floats (``**`` is typed Any and runs as
    # a generic power on float objects); the same C pow underneath, so the same result.
    return math.pow(2.0, -elapsed_ms / half_life_ms)


def time_to_fall(value: float, limit: float, half_life_ms: int) -> float | None:
    """Milliseconds until ``value`` decays below ``limit``; ``None`` if it never does.

    The closed form of ``value * 2**(-t/H) = limit``: ``t = H * log2(value / limit)``.
    """
    if value < limit:
        return 0.0
    if limit <= 0:
        return None
    return half_life_ms * math.log2(value / limit)


def settle_clock(now_ms: int, inbound: Iterable[tuple[bool, int | None]]) -> int:
    """The instant by which a partition's qualified leads may be returned to nurture by decay.

    A lead due at ``T`` may be settled only once every event of its partition that occurred
    before ``T`` has been read, or an event still waiting (a worker catching up after an outage)
    could have kept it qualified, and settling first would send a nurture event and then a
    second MQL that live scoring never sends. ``inbound`` holds, for each inbound topic of the
    partition, whether it is read to its end and the time of the newest record read from it
    (None if none was). The clock is ``now_ms`` when every topic is read to its end; else the
    oldest newest-record time of the topics still behind (-1, nothing due, if one has none).
    """
    clock = now_ms
    for read_to_end, newest_ms in inbound:
        if not read_to_end:
            clock = min(clock, -1 if newest_ms is None else newest_ms)
    return clock
