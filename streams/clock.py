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
        return self.at(time.time() * 1000)

    def at(self, wall_ms: float) -> int:
        """The service time at a wall-clock instant (a record's timestamp, say)."""
        if self.speed == 1.0:
            return int(wall_ms)
        return int(self.epoch_ms + (wall_ms - self.epoch_ms) * self.speed)
