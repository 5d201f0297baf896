"""``leadscore collect`` stops at start-up with the clear error when the broker refuses its
credentials (as ``leadscore worker`` does), yet keeps serving (503, pixel GIFs) when the broker is
merely unreachable. The refusal is the SASL error aiokafka raises, given by a stand-in for the
connection the start-up check opens; everything from there on is the collector's own code."""

import asyncio
import logging.config
import socket
from typing import Any

import aiohttp
import pytest
from aiokafka.errors import SaslAuthenticationFailed
from click.testing import CliRunner

from collector.app import serve
from collector.pixel import GIF
from streams import kafka_clients
from streams.cli import main
from streams.settings import settings_from_env
from tests.unit.test_collector_parts import CHROME

pytestmark = pytest.mark.unit

PASSWORD = "not-the-password-123"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def sasl_env(broker_port: int) -> dict[str, str]:
    return {
        "LEADSCORE_BOOTSTRAP": f"127.0.0.1:{broker_port}",
        "LEADSCORE_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "LEADSCORE_SASL_USERNAME": "collector",
        "LEADSCORE_SASL_PASSWORD": PASSWORD,
        "LEADSCORE_COLLECTOR_HOST": "127.0.0.1",
        "LEADSCORE_COLLECTOR_PORT": str(free_port()),
    }


@pytest.fixture
def refusing_broker(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every broker connection is refused with SaslAuthenticationFailed; returns the attempts."""
    attempts: list[tuple[str, int]] = []

    async def refuse(host: str, port: int, **options: Any) -> None:
        attempts.append((host, port))
        assert options["sasl_plain_password"] == PASSWORD
        raise SaslAuthenticationFailed("Authentication failed during authentication due to invalid credentials")

    monkeypatch.setattr(kafka_clients, "create_conn", refuse)
    return attempts


@pytest.mark.timeout(120)  # without the refusal check the collector would retry (and hang) forever
def test_leadscore_collect_fails_fast_on_refused_credentials(
    refusing_broker: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logging.config, "dictConfig", lambda config: None)  # keep pytest's logging
    env = sasl_env(free_port())
    result = CliRunner().invoke(main, ["collect"], env=env)
    assert result.exit_code == 1, result.output
    assert "Error: the Kafka broker 127.0.0.1:" in result.output
    assert "refused SASL" in result.output
    assert "SaslAuthenticationFailed" in result.output
    assert "LEADSCORE_SASL_USERNAME" in result.output
    assert PASSWORD not in result.output
    assert refusing_broker == [("127.0.0.1", int(env["LEADSCORE_BOOTSTRAP"].rsplit(":", 1)[1]))]


@pytest.mark.timeout(120)
async def test_refusal_stops_serving(refusing_broker: list[tuple[str, int]]) -> None:
    settings = settings_from_env(sasl_env(free_port()))
    with pytest.raises(kafka_clients.KafkaRefusedError):
        await serve(settings, stop=asyncio.Event())
    # The port is closed again: nothing half-alive is left answering 503 forever.
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as http:
            await http.get(f"http://127.0.0.1:{settings.collector.port}/livez")


@pytest.mark.timeout(120)
async def test_an_unreachable_broker_leaves_the_collector_serving() -> None:
    # Nothing listens on the broker's port: not a refusal, the collector stays up (503, GIFs).
    settings = settings_from_env(
        {"LEADSCORE_BOOTSTRAP": f"127.0.0.1:{free_port()}", "LEADSCORE_COLLECTOR_PORT": str(free_port())}
    )
    stop = asyncio.Event()
    serving = asyncio.create_task(serve(settings, stop=stop))
    base = f"http://127.0.0.1:{settings.collector.port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    ready = await http.get(base + "/readyz")
                    break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("the collector never listened")
            assert ready.status == 503
            await asyncio.sleep(3.0)  # a few connection attempts later: still up
            assert not serving.done()
            assert (await http.get(base + "/livez")).status == 200
            pixel = await http.get(base + "/t.gif?u=/pricing", headers={"User-Agent": CHROME})
            assert pixel.status == 200
            assert await pixel.read() == GIF
    finally:
        stop.set()
        await asyncio.wait_for(serving, 60)
