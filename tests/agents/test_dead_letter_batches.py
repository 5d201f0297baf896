"""Dead letters go to the broker in produce batches (``hand_over``): the records of a batch the
broker refuses are sent again, and only they; each is counted once it is on the topic."""

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from agents import dead_letters
from scoring.outputs import DeadLetter
from streams.app import Service, create_app
from streams.settings import Settings


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Service:
    monkeypatch.setattr(dead_letters, "FIRST_RETRY_S", 0.01)
    return create_app(Settings(store="memory://", data_dir=tmp_path, app_id=f"dlq-{uuid.uuid4().hex[:8]}"))


class Broker:
    """Stands in for ``hand_over``: one batch per key; on its first call it refuses the batches
    of the keys in ``refused`` and hands over nothing from ``stop_at`` on (an error first)."""

    def __init__(self, refused: frozenset[bytes] = frozenset(), stop_at: bytes | None = None) -> None:
        self.refused, self.stop_at = set(refused), stop_at
        self.calls: list[list[bytes | None]] = []

    async def __call__(
        self, app: Any, topic: str, records: list[tuple[bytes | None, bytes]], headers: Any = None
    ) -> tuple[list[tuple[Any, list[int]]], Exception | None]:
        first = not self.calls
        self.calls.append([key for key, _ in records])
        loop = asyncio.get_running_loop()
        answers: list[tuple[Any, list[int]]] = []
        by_key: dict[bytes | None, list[int]] = {}
        for index, (key, _) in enumerate(records):
            by_key.setdefault(key, []).append(index)
        for key, indices in by_key.items():
            if first and key == self.stop_at:
                return answers, RuntimeError("the producer's queue stayed full")
            answer = loop.create_future()
            if first and key in self.refused:
                answer.set_exception(RuntimeError("refused"))
            else:
                answer.set_result(None)
            answers.append((answer, indices))
        return answers, None


def letter(key: bytes) -> DeadLetter:
    return DeadLetter("invalid_json", "truncated", "web-visits", 0, 1, key, b"{")


async def test_a_refused_batch_is_sent_again_and_only_it(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    broker = Broker(refused=frozenset({b"b"}))
    monkeypatch.setattr(dead_letters, "hand_over", broker)
    await dead_letters.send_dead_letters(service, [letter(b"a"), letter(b"b"), letter(b"b"), letter(b"c")], 0)
    assert broker.calls == [[b"a", b"b", b"b", b"c"], [b"b", b"b"]]
    assert service.metrics.dead_letters.labels("invalid_json")._value.get() == 4
    assert service.metrics.dead_letter_retries._value.get() == 1
    assert service.metrics.dead_letter_blocked._value.get() == 0  # blocked, then free again
    assert service.dead_letter_blocked is None


async def test_records_not_handed_over_are_sent_on_the_next_attempt(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = Broker(stop_at=b"b")
    monkeypatch.setattr(dead_letters, "hand_over", broker)
    await dead_letters.send_dead_letters(service, [letter(b"a"), letter(b"b"), letter(b"c")], 0)
    assert broker.calls == [[b"a", b"b", b"c"], [b"b", b"c"]]  # "a" was taken: not sent twice
    assert service.metrics.dead_letters.labels("invalid_json")._value.get() == 3
