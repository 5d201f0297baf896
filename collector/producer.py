"""The collector's one Kafka producer: idempotent, ``acks=all``; a request is answered only after
the broker acknowledged all of its records."""

import asyncio
import logging
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streams.kafka_clients import KafkaRefusedError, client_options, refusal
from streams.settings import Settings

__all__ = ["Outgoing", "Producer", "Unavailable", "create_producer"]

log = logging.getLogger("collector")

Outgoing = tuple[str, bytes, bytes]  # topic, key, value


class Unavailable(Exception):
    """The broker did not acknowledge in time (unreachable, or no leader)."""


def create_producer(settings: Settings) -> AIOKafkaProducer:
    """The aiokafka producer of the collector (the one place its client options are set)."""
    return AIOKafkaProducer(
        **client_options(settings),  # bootstrap servers and LEADSCORE_SECURITY_PROTOCOL etc.
        client_id="leadscore-collector",
        acks="all",
        enable_idempotence=True,
        linger_ms=2,
        request_timeout_ms=max(1000, int(settings.collector.produce_timeout_s * 1000)),
    )


class Producer:
    """Starts the producer in the background (the collector answers 503 until it is connected) and
    sends a request's records, waiting for every acknowledgement."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._starting: asyncio.Task[None] | None = None
        self._refused = asyncio.Event()
        self.refusal: KafkaRefusedError | None = None
        self.timeout_s = settings.collector.produce_timeout_s

    @property
    def ready(self) -> bool:
        """Whether the producer is connected to the cluster."""
        return self._producer is not None

    def start(self) -> None:
        """Connect in the background, retrying until the broker answers (and stopping at a refusal
        of the credentials or of the broker's certificate, which no retry can fix)."""
        self._starting = asyncio.get_running_loop().create_task(self._connect())

    async def refused(self) -> KafkaRefusedError:
        """Wait until the broker refuses the credentials or its certificate; returns the clear error."""
        await self._refused.wait()
        assert self.refusal is not None
        return self.refusal

    def _refuse(self, error: KafkaRefusedError) -> None:
        log.error("Kafka refused the collector", extra={"error": str(error)})
        self.refusal = error
        self._refused.set()

    async def _connect(self) -> None:
        from streams.topics import ensure_topics

        while True:
            try:  # never let the broker auto-create a topic with the wrong partition count
                await ensure_topics(self._settings)
            except KafkaRefusedError as exc:  # refused credentials or certificate: no retry helps
                self._refuse(exc)
                return
            except Exception as exc:  # unreachable, or a topic layout to fix: not ready, retried
                log.warning("topics not ready", extra={"error": f"{type(exc).__name__}: {exc}"})
                await asyncio.sleep(2.0)
                continue
            producer = create_producer(self._settings)
            try:
                await producer.start()
            except Exception as exc:  # a broker gone since the topic check: retried, unless refused
                await producer.stop()
                fatal = refusal(exc, ",".join(self._settings.bootstrap_servers), self._settings.security)
                if fatal is not None:
                    self._refuse(fatal)
                    return
                if not isinstance(exc, KafkaError):
                    raise
                await asyncio.sleep(1.0)
                continue
            self._producer = producer
            return

    async def stop(self) -> None:
        """Flush and close."""
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
        if self._producer is not None:
            await self._producer.stop()

    async def send(self, records: Sequence[Outgoing]) -> float:
        """Send all records and wait until the broker acknowledged each; returns the seconds it
        took. Raises :class:`Unavailable` if that does not happen within the produce timeout."""
        if self._producer is None:
            raise Unavailable("not connected to the Kafka cluster yet")
        began = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                futures = [await self._producer.send(topic, value=value, key=key) for topic, key, value in records]
                await asyncio.gather(*futures)
        except (TimeoutError, KafkaError) as exc:
            raise Unavailable(f"{type(exc).__name__}: {exc}") from None
        return time.perf_counter() - began
