"""Which qualified leads fall due for nurture when: one heap per partition, lazily cleaned."""

import heapq
from collections.abc import Iterable


class DueIndex:
    """Due times of qualified leads, per partition, so a tick touches only the leads due."""

    def __init__(self) -> None:
        self._heaps: dict[int, list[tuple[int, str]]] = {}
        self._due: dict[int, dict[str, int]] = {}

    def schedule(self, partition: int, lead_id: str, due_ms: int | None) -> None:
        """Set (or with ``None`` clear) a lead's due time; an older entry becomes stale."""
        current = self._due.setdefault(partition, {})
        if due_ms is None:
            current.pop(lead_id, None)
            return
        if current.get(lead_id) == due_ms:
            return
        current[lead_id] = due_ms
        heapq.heappush(self._heaps.setdefault(partition, []), (due_ms, lead_id))

    def pop_due(self, partition: int, now_ms: int) -> list[str]:
        """Remove and return the leads of ``partition`` due at or before ``now_ms``."""
        heap = self._heaps.get(partition)
        current = self._due.get(partition, {})
        due: list[str] = []
        while heap and heap[0][0] <= now_ms:
            due_ms, lead_id = heapq.heappop(heap)
            if current.get(lead_id) == due_ms:
                del current[lead_id]
                due.append(lead_id)
        return due

    def keep_only(self, partitions: Iterable[int]) -> None:
        """Forget every partition not in ``partitions`` (after a rebalance)."""
        keep = set(partitions)
        for partition in [p for p in self._heaps if p not in keep]:
            del self._heaps[partition]
            self._due.pop(partition, None)

    def clear(self) -> None:
        """Forget everything."""
        self._heaps.clear()
        self._due.clear()

    def __len__(self) -> int:
        return sum(len(leads) for leads in self._due.values())

    def next_due(self, partition: int) -> int | None:
        """The earliest live due time of a partition, if any."""
        current = self._due.get(partition)
        return min(current.values()) if current else None
