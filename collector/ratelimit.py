"""A token bucket per client: requests over the rate get 429 with ``Retry-After``."""

import math
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """``rate`` requests a second and client, bursts up to ``burst``; at most ``max_clients``
    buckets are kept (the least recently used go first, which only forgives their debt)."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float], max_clients: int = 10_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate, self.burst, self._clock, self._max = rate, float(burst), clock, max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)

    def take(self, client: str) -> int:
        """Take one token for ``client``: 0 if allowed, else the whole seconds to wait (>= 1)."""
        now = self._clock()
        tokens, at = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        wait = 0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = max(1, math.ceil((1 - tokens) / self.rate))
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return wait
