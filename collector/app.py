"""The collector's aiohttp application and ``leadscore collect``."""

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from collector.producer import Producer
from collector.routes import Collector
from streams.clock import Clock
from streams.settings import Settings

__all__ = ["COLLECTOR", "build_app", "run_collector", "serve"]

log = logging.getLogger("collector")
COLLECTOR = web.AppKey("collector", Collector)


def build_app(
    settings: Settings, clock: Callable[[], float] | None = None, producer: Producer | None = None
) -> web.Application:
    """The application: routes, request counting, and the producer started and stopped with it
    (``producer`` replaces the Kafka one in tests). ``clock`` (epoch seconds) stamps pixel visits
    and identify calls; by default the service clock (LEADSCORE_CLOCK_SPEED, as the workers')."""
    if clock is None:
        service_clock = Clock(settings.clock_speed, settings.clock_epoch_ms)
        clock = lambda: service_clock.now_ms() / 1000  # noqa: E731
    producer = producer or Producer(settings)
    collector = Collector(settings, producer, clock)
    # Bodies are read and limited by the handlers (413 with a JSON answer); aiohttp's own cap is
    # set just above, as a backstop.
    app = web.Application(
        middlewares=[collector.count_requests], client_max_size=settings.collector.body_limit_bytes + 1
    )
    app.add_routes(collector.routes())
    app[COLLECTOR] = collector

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        producer.start()
        if not settings.collector.write_keys:
            log.warning("no write keys: the events API and identify refuse every call")
        if not settings.collector.token_secret:
            log.warning("no token secret: pixel visits are all anonymous")
        if collector.sendgrid_key is None:
            log.warning("no SendGrid verification key: webhook calls are not authenticated")
        yield
        await producer.stop()

    app.cleanup_ctx.append(lifecycle)
    return app


def run_collector(settings: Settings) -> None:
    """Serve the collector until SIGINT/SIGTERM. Raises :class:`KafkaRefusedError` when the broker
    refuses the credentials or its certificate; an unreachable broker only means 503 until it is up."""
    asyncio.run(serve(settings))


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Serve until SIGINT/SIGTERM (or ``stop`` is set), or until the broker refuses the collector:
    then stop serving and raise the refusal (no access log: it would hold IP addresses)."""
    config = settings.collector
    producer = Producer(settings)
    if stop is None:
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    runner = web.AppRunner(build_app(settings, producer=producer), access_log=None, handle_signals=False)
    await runner.setup()  # starts the producer's background connection
    try:
        await web.TCPSite(runner, config.host, config.port).start()
        log.info("collector listening", extra={"host": config.host, "port": config.port})
        refused = asyncio.ensure_future(producer.refused())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait((refused, stopped), return_when=asyncio.FIRST_COMPLETED)
        refused.cancel()
        stopped.cancel()
    finally:
        await runner.cleanup()
    if producer.refusal is not None:
        raise producer.refusal
