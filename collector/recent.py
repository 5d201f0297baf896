"""The webhook event ids a collector process has recently sent, so that a retried webhook call is
not produced again (best effort per process; the worker's duplicate check by ``event_id`` is the
guarantee across processes)."""

from collections import OrderedDict
from collections.abc import Iterable

__all__ = ["RecentIds"]


class RecentIds:
    """A bounded set of ids, the oldest forgotten first."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def add(self, ids: Iterable[str]) -> None:
        """Remember ids (call this once the broker acknowledged them)."""
        for event_id in ids:
            self._ids[event_id] = None
            self._ids.move_to_end(event_id)
        while len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
