"""The service clock: wall time, or time running faster for demos and tests."""

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Clock:
    """Epoch milliseconds. With ``speed`` > 1, time after ``epoch_ms`` runs ``speed`` times faster,
    so that every process given the same epoch and speed agrees on the time."""

    speed: float = 1.0
    epoch_ms: int = 0

    def now_ms(self) -> int:
        """The current time in epoch milliseconds."""
        wall = time.time() * 1000
        if self.speed == 1.0:
            return int(wall)
        return int(self.epoch_ms + (wall - self.epoch_ms) * self.speed)
