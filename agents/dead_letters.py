"""Dead letters are sent and acknowledged before their source record is: never skipped.

When the dead-letter topic refuses records (deleted, unwritable, its ``max.message.bytes`` too
small, an ACL), the caller waits here, retrying with backoff, and the record is not acked, so its
offset is not committed: the batch consumer (one batch at a time) and the per-event agent stop
consuming until the topic takes the records again. Meanwhile the worker reports it: an error log
line (the topic and the error class, never a key or a value), ``leadscore_dead_letter_blocked``
= 1 and ``/readyz`` 503 with the reason. Records the broker already took are not sent again, so
each dead letter is written once.
"""

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import orjson

from scoring.outputs import DeadLetter
from streams.faust_internals import Headers, hand_over

if TYPE_CHECKING:
    from streams.app import Service

log = logging.getLogger(__name__)

FIRST_RETRY_S = 0.5
MAX_RETRY_S = 10.0


class DeadLetterBlocked(RuntimeError):
    """The dead-letter topic refused records and the worker is stopping: the source is not acked."""


async def send_dead_letters(service: "Service", letters: Sequence[DeadLetter], now_ms: int) -> None:
    """Send dead letters and wait until the broker has every one, retrying for as long as it takes."""
    if not letters:
        return
    topic = service.settings.topics.dead_letters
    pending: list[tuple[bytes | None, bytes, Headers]] = [
        (letter.record_key(), orjson.dumps(letter.to_payload(now_ms)), [("leadscore-reason", letter.reason.encode())])
        for letter in letters
    ]
    delay = FIRST_RETRY_S
    blocked = False
    try:
        while pending:
            error = await _attempt(service, topic, pending)
            if error is None:
                break
            if service.app.should_stop:
                raise DeadLetterBlocked(f"dead-letter topic {topic!r} refuses records ({type(error).__name__})")
            blocked = True
            reason = f"dead-letter topic {topic!r} refuses records: {type(error).__name__}"
            service.dead_letter_blocked = reason
            service.metrics.dead_letter_blocked.set(1)
            service.metrics.dead_letter_retries.inc()
            log.error(
                "dead letters refused; consumption paused until the topic takes them (retry in %.1f s)",
                delay,
                extra={"topic": topic, "error": type(error).__name__, "pending": len(pending)},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_S)
    finally:
        if blocked and not pending:
            service.dead_letter_blocked = None
            service.metrics.dead_letter_blocked.set(0)
            log.warning("dead-letter topic takes records again; consumption resumes", extra={"topic": topic})
    for letter in letters:
        service.metrics.dead_letters.labels(letter.reason).inc()


async def _attempt(
    service: "Service", topic: str, pending: list[tuple[bytes | None, bytes, Headers]]
) -> Exception | None:
    """Send every pending record in produce batches (one per partition: ``hand_over``); remove those
    the broker acknowledged; the first error, if any."""
    try:
        handed, error = await hand_over(
            service.app, topic, [(key, value) for key, value, _ in pending], [headers for _, _, headers in pending]
        )
    except Exception as exc:  # refused before any was sent (e.g. no metadata for the topic)
        return exc
    done: set[int] = set()
    for future, indices in handed:
        try:
            await future
            done.update(indices)
        except Exception as exc:
            error = error or exc
    pending[:] = [item for index, item in enumerate(pending) if index not in done]
    return error
