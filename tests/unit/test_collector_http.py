"""The collector's HTTP answers, in process with a stand-in producer (no broker): the pixel's GIF in
every case, cookies, bots and Do-Not-Track, write keys, 413, 429 with Retry-After, 503 when the
broker does not acknowledge, per-event rejections, identify and the SendGrid signature check.
The real broker is in tests/integration/test_collector.py."""

from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from collector.app import build_app
from collector.pixel import GIF
from collector.producer import Outgoing, Producer, Unavailable
from collector.tokens import sign_lead_token
from collector.validation import validator
from streams.settings import Settings, settings_from_env
from tests.unit.test_collector_parts import CHROME, SG_PAYLOAD, SG_PUBLIC_KEY, SG_SIGNATURE, SG_TIMESTAMP

pytestmark = [pytest.mark.unit, pytest.mark.asyncio(loop_scope="session")]

SECRET = "test-secret"
KEY = {"Authorization": "Bearer key-1"}
BROWSER = {"User-Agent": CHROME}


class FakeProducer(Producer):
    """Records what would be sent; ``fail`` makes every send time out."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.sent: list[Outgoing] = []
        self.fail = False

    @property
    def ready(self) -> bool:
        return not self.fail

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send(self, records: Sequence[Outgoing]) -> float:
        if self.fail:
            raise Unavailable("no broker")
        self.sent.extend(records)
        return 0.001


def settings(**env: str) -> Settings:
    return settings_from_env(
        {
            "LEADSCORE_COLLECTOR_TOKEN_SECRET": SECRET,
            "LEADSCORE_COLLECTOR_WRITE_KEYS": "key-1,key-2",
            "LEADSCORE_COLLECTOR_BODY_LIMIT": "2048",
            "LEADSCORE_COLLECTOR_RATE": "1",
            "LEADSCORE_COLLECTOR_BURST": "5",
            **env,
        }
    )


@pytest.fixture
async def client() -> AsyncIterator[tuple[TestClient[Any, Any], FakeProducer]]:
    config = settings()
    producer = FakeProducer(config)
    async with TestClient(TestServer(build_app(config, producer=producer))) as test_client:
        yield test_client, producer


async def metric(client: TestClient[Any, Any], name: str) -> float:
    text = await (await client.get("/metrics")).text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def test_pixel_with_token_is_a_lead_visit(client: tuple[TestClient[Any, Any], FakeProducer]) -> None:
    http, producer = client
    token = sign_lead_token("lead-1", SECRET)
    answer = await http.get("/t.gif", params={"u": "https://www.example.com/pricing", "lt": token}, headers=BROWSER)
    assert answer.status == 200
    assert answer.content_type == "image/gif"
    assert await answer.read() == GIF
    assert "no-store" in answer.headers["Cache-Control"]
    assert answer.cookies["ls_lt"].value == token
    [(topic, key, value)] = producer.sent
    assert (topic, key) == ("web-visits", b"lead-1")
    assert orjson.loads(value)["url"] == "https://www.example.com/pricing"
    # The cookie carries the lead on the next page, without lt.
    await http.get("/t.gif", params={"u": "/docs"}, headers=BROWSER)
    assert producer.sent[1][1] == b"lead-1"


async def test_pixel_without_token_is_anonymous_and_keeps_its_id(
    client: tuple[TestClient[Any, Any], FakeProducer],
) -> None:
    http, producer = client
    first = await http.get("/t.gif", headers=BROWSER | {"Referer": "https://www.example.com/a"})
    anonymous_id = first.cookies["ls_aid"].value
    await http.get("/t.gif", params={"u": "https://www.example.com/b"}, headers=BROWSER)
    assert [key for _, key, _ in producer.sent] == [anonymous_id.encode()] * 2
    event = orjson.loads(producer.sent[0][2])
    assert event["anonymous_id"] == anonymous_id
    assert not list(validator("web_visit").iter_errors(event))  # the contract
    assert "lead_id" not in event


async def test_pixel_bad_token_is_counted_and_not_the_lead(client: tuple[TestClient[Any, Any], FakeProducer]) -> None:
    http, producer = client
    forged = sign_lead_token("lead-1", "guessed")
    answer = await http.get("/t.gif", params={"u": "/pricing", "lt": forged}, headers=BROWSER)
    assert await answer.read() == GIF
    assert await metric(http, "leadscore_collector_bad_tokens_total") == 1
    assert all(key != b"lead-1" for _, key, _ in producer.sent)


@pytest.mark.parametrize(
    ("headers", "counter"),
    [
        ({"User-Agent": "Googlebot/2.1"}, "leadscore_collector_bots_total"),
        (BROWSER | {"Sec-Purpose": "prefetch"}, "leadscore_collector_bots_total"),
        (BROWSER | {"DNT": "1"}, "leadscore_collector_do_not_track_total"),
        (BROWSER | {"Sec-GPC": "1"}, "leadscore_collector_do_not_track_total"),
    ],
)
async def test_pixel_records_nothing_for_bots_and_dnt(
    client: tuple[TestClient[Any, Any], FakeProducer], headers: dict[str, str], counter: str
) -> None:
    http, producer = client
    answer = await http.get("/t.gif", params={"u": "/pricing"}, headers=headers)
    assert await answer.read() == GIF
    assert producer.sent == []
    assert "ls_aid" not in answer.cookies
    assert await metric(http, counter) == 1


async def test_dnt_can_be_ignored_by_setting() -> None:
    config = settings(LEADSCORE_COLLECTOR_HONOUR_DNT="false")
    producer = FakeProducer(config)
    async with TestClient(TestServer(build_app(config, producer=producer))) as http:
        await http.get("/t.gif", params={"u": "/pricing"}, headers=BROWSER | {"DNT": "1"})
    assert len(producer.sent) == 1


async def test_pixel_answers_its_gif_when_the_broker_is_down(
    client: tuple[TestClient[Any, Any], FakeProducer],
) -> None:
    http, producer = client
    producer.fail = True
    answer = await http.get("/t.gif", params={"u": "/pricing"}, headers=BROWSER)
    assert answer.status == 200
    assert await answer.read() == GIF
    assert await metric(http, 'leadscore_collector_produce_failures_total{source="pixel"}') == 1
    assert (await http.get("/readyz")).status == 503


async def test_api_batch_accepts_good_and_reports_bad(client: tuple[TestClient[Any, Any], FakeProducer]) -> None:
    http, producer = client
    good = {"type": "content_download", "event_id": "d1", "lead_id": "L", "occurred_at": 1, "asset_id": "a"}
    batch = [good | {"asset_type": "guide"}, good, {"type": "nope"}]
    answer = await http.post("/v1/batch", json={"batch": batch}, headers=KEY)
    assert answer.status == 202
    body = await answer.json()
    assert body["accepted"] == 1
    assert [(r["index"], r["reason"]) for r in body["rejected"]] == [(1, "missing_field"), (2, "unknown_type")]
    assert [(t, k) for t, k, _ in producer.sent] == [("content-downloads", b"L")]
    only_bad = await http.post("/v1/events", json=good, headers={"Authorization": "Bearer key-2"})
    assert only_bad.status == 400
    assert (await only_bad.json())["rejected"][0]["reason"] == "missing_field"


async def test_api_needs_a_known_write_key(client: tuple[TestClient[Any, Any], FakeProducer]) -> None:
    http, _ = client
    for headers in ({}, {"Authorization": "Bearer key-3"}, {"Authorization": "Basic key-1"}):
        answer = await http.post("/v1/events", json=[], headers=headers)
        assert answer.status == 401
        assert answer.headers["WWW-Authenticate"] == "Bearer"


async def test_api_body_over_the_limit_is_413(client: tuple[TestClient[Any, Any], FakeProducer]) -> None:
    http, producer = client
    answer = await http.post("/v1/events", data=b"[" + b" " * 4096 + b"]", headers=KEY)
    assert answer.status == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(5):
            yield b" " * 1000

    chunked = await http.post("/v1/events", data=chunks(), headers=KEY)
    assert chunked.status == 413
    assert producer.sent == []

    event = {"type": "web_visit", "event_id": "e", "lead_id": "L", "occurred_at": 1, "url": "/" + "x" * 1500}
    body = orjson.dumps(event)

    async def pieces() -> AsyncIterator[bytes]:  # under the limit, in several chunks: read whole
        for start in range(0, len(body), 100):
            yield body[start : start + 100]

    whole = await http.post("/v1/events", data=pieces(), headers=KEY)
    assert whole.status == 202, await whole.text()
    assert len(producer.sent) == 1


async def test_api_over_the_rate_is_429_with_retry_after(client: tuple[TestClient[Any, Any], FakeProducer]) -> None:
    http, _ = client
    statuses = [(await http.post("/v1/events", json=[], headers=KEY)).status for _ in range(5)]
    assert statuses == [202] * 5  # the burst
    over = await http.post("/v1/events", json=[], headers=KEY)
    assert over.status == 429
    assert int(over.headers["Retry-After"]) >= 1
    other_key = await http.post("/v1/events", json=[], headers={"Authorization": "Bearer key-2"})
    assert other_key.status == 202


async def test_api_is_503_when_the_broker_does_not_acknowledge(
    client: tuple[TestClient[Any, Any], FakeProducer],
) -> None:
    http, producer = client
    producer.fail = True
    event = {"type": "web_visit", "event_id": "e", "lead_id": "L", "occurred_at": 1, "url": "/"}
    answer = await http.post("/v1/events", json=event, headers=KEY)
    assert answer.status == 503
    assert "Retry-After" in answer.headers


async def test_identify_message(client: tuple[TestClient[Any, Any], FakeProducer]) -> None:
    http, producer = client
    answer = await http.post("/v1/identify", json={"anonymous_id": "a_1", "lead_id": "L"}, headers=KEY)
    assert answer.status == 202
    [(topic, key, value)] = producer.sent
    assert (topic, key) == ("lead-identities", b"anon:a_1")
    message = orjson.loads(value)
    assert message["type"] == "identify"
    assert not list(validator("lead_identity").iter_errors(message))  # the contract
    assert (message["anonymous_id"], message["lead_id"]) == ("a_1", "L")
    assert message["occurred_at"].endswith("Z")
    again = await http.post("/v1/identify", json={"anonymous_id": "a_1", "lead_id": "L"}, headers=KEY)
    assert again.status == 202
    assert orjson.loads(producer.sent[1][2])["event_id"] == message["event_id"]  # deterministic
    bad = await http.post("/v1/identify", json={"anonymous_id": "a_1"}, headers=KEY)
    assert bad.status == 400
    assert (await bad.json())["error"] == "missing_field"


async def test_sendgrid_signature_is_checked_when_a_key_is_set() -> None:
    config = settings(LEADSCORE_SENDGRID_PUBLIC_KEY=SG_PUBLIC_KEY)
    producer = FakeProducer(config)
    headers = {
        "X-Twilio-Email-Event-Webhook-Signature": SG_SIGNATURE,
        "X-Twilio-Email-Event-Webhook-Timestamp": SG_TIMESTAMP,
    }
    async with TestClient(TestServer(build_app(config, producer=producer))) as http:
        good = await http.post("/webhooks/sendgrid", data=SG_PAYLOAD, headers=headers)
        assert good.status == 200
        assert await good.json() == {"accepted": 0, "duplicates": 0, "ignored": 1, "rejected": []}  # a "dropped" event
        tampered = await http.post("/webhooks/sendgrid", data=SG_PAYLOAD.replace(b"dropped", b"open"), headers=headers)
        assert tampered.status == 401
        unsigned = await http.post("/webhooks/sendgrid", data=SG_PAYLOAD)
        assert unsigned.status == 401
        assert await metric(http, "leadscore_collector_bad_signatures_total") == 2
        assert await metric(http, 'leadscore_collector_webhook_ignored_total{event_type="dropped"}') == 1
    assert producer.sent == []
