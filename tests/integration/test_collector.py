"""The collector on the real broker, as a separate process, with a worker: a pixel visit with a
signed lead token, an anonymous one and its identify, an API batch with good and bad events, a
signed SendGrid payload posted twice; each record lands on its topic once and the worker scores
them. A collector without a reachable broker answers 503 (the pixel still its GIF)."""

import base64
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from collector.pixel import GIF
from collector.tokens import sign_lead_token
from scoring.identity import email_hash
from tests.integration.collector import CollectorProcess, cookie_value
from tests.integration.kafka import Received, read_until, run
from tests.integration.waits import WAIT_S, counts, wait_for_lead
from tests.integration.worker import WorkerProcess, free_port

SECRET = "integration-secret"
WRITE_KEY = "wk-integration"


def signing_key() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A P-256 key pair like SendGrid's; the public half as SendGrid shows it (base64 DER)."""
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return private, base64.b64encode(der).decode()


def signed_headers(private: ec.EllipticCurvePrivateKey, body: bytes) -> dict[str, str]:
    timestamp = str(int(time.time()))
    signature = private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "Content-Type": "application/json",
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
    }


def by_key(records: list[Received], key: bytes) -> list[Any]:
    return [r.json() for r in records if r.key == key]


def test_collector_to_kafka_to_worker(
    worker_factory: Callable[..., WorkerProcess],
    collector_factory: Callable[..., CollectorProcess],
    bootstrap: str,
    names: str,
) -> None:
    private, public = signing_key()
    worker = worker_factory()
    collector = collector_factory(
        LEADSCORE_COLLECTOR_TOKEN_SECRET=SECRET,
        LEADSCORE_COLLECTOR_WRITE_KEYS=WRITE_KEY,
        LEADSCORE_SENDGRID_PUBLIC_KEY=public,
    )
    lead = f"lead-{uuid.uuid4().hex[:8]}"
    now = int(time.time() * 1000)

    # The API: a profile and a demo webinar for the lead, and two bad events.
    batch = [
        {"type": "lead_profile", "event_id": f"{lead}-p", "lead_id": lead, "occurred_at": now - 5000}
        | {"seniority": "director", "company_size": 800, "industry": "software", "country": "DE"},
        {"type": "webinar_event", "event_id": f"{lead}-w", "lead_id": lead, "occurred_at": now - 4000}
        | {"webinar_id": "w1", "status": "attended", "webinar_type": "demo"},
        {"type": "email_event", "event_id": f"{lead}-bad", "lead_id": lead, "occurred_at": now, "action": "open"},
        {"type": "web_visit", "event_id": f"{lead}-bad2", "lead_id": lead, "occurred_at": now, "url": "pricing"},
    ]
    answer = collector.post_json("/v1/batch", {"batch": batch}, key=WRITE_KEY)
    assert answer.status == 202, answer.body
    assert answer.json()["accepted"] == 2
    assert [(r["index"], r["reason"]) for r in answer.json()["rejected"]] == [
        (2, "missing_field"),
        (3, "invalid_value"),
    ]
    assert collector.post_json("/v1/batch", batch, key="wrong").status == 401

    # The pixel: a signed token (the lead), a forged one (not the lead), and an anonymous visitor.
    token = sign_lead_token(lead, SECRET)
    gif = collector.pixel(urlencode({"u": "https://www.example.com/pricing", "lt": token, "e": "pv-1"}))
    assert (gif.status, gif.body) == (200, GIF)
    forged = sign_lead_token(lead, "guessed-secret")
    assert collector.pixel(urlencode({"u": "https://www.example.com/careers", "lt": forged})).body == GIF
    anonymous = collector.pixel(urlencode({"u": "https://www.example.com/docs/api"}))
    anon_id = cookie_value(anonymous, "ls_aid")
    assert anon_id
    for page in ("/docs/sdk", "/product"):  # the same browser: its cookie comes back
        assert collector.pixel(urlencode({"u": "https://www.example.com" + page}), f"ls_aid={anon_id}").body == GIF
    assert collector.metric("leadscore_collector_bad_tokens_total") == 1

    # Identify, twice: the anonymous visitor is the lead.
    for _ in range(2):
        identified = collector.post_json("/v1/identify", {"anonymous_id": anon_id, "lead_id": lead}, key=WRITE_KEY)
        assert identified.status == 202, identified.body

    # SendGrid, signed, posted twice: an open for the lead, a click known by address, a delivery.
    address = f"{lead}@example.com"
    events = [
        {
            "event": "open",
            "sg_event_id": f"sg-open-{lead}",
            "timestamp": now // 1000,
            "lead_id": lead,
            "email": address,
        },
        {"event": "click", "sg_event_id": f"sg-click-{lead}", "timestamp": now // 1000, "email": address}
        | {"url": "https://www.example.com/pricing"},
        {"event": "delivered", "sg_event_id": f"sg-dlv-{lead}", "timestamp": now // 1000, "email": address},
    ]
    body = orjson.dumps(events)
    first = collector.request("POST", "/webhooks/sendgrid", body, signed_headers(private, body))
    again = collector.request("POST", "/webhooks/sendgrid", body, signed_headers(private, body))
    assert (first.status, again.status) == (200, 200), (first.body, again.body)
    assert (first.json()["accepted"], first.json()["ignored"]) == (2, 1)
    assert again.json()["duplicates"] == 2
    unsigned = collector.request("POST", "/webhooks/sendgrid", body, {"Content-Type": "application/json"})
    assert unsigned.status == 401

    # The worker scores the lead: profile, webinar, the token's pricing visit, the open once, and
    # the three anonymous visits released to the lead by the identify, each once; the forged visit
    # is not the lead's.
    wanted = {"pricing_page", "webinar_attended", "email_open", "docs_page", "product_page"}
    state = wait_for_lead(worker, lead, lambda body: wanted <= set(counts(body)))
    assert wanted <= set(counts(state)), (state, collector.log(), worker.log())
    rules = counts(state)
    assert rules["pricing_page"] == 1
    assert rules["email_open"] == 1
    assert rules["webinar_attended"] == 1
    assert rules["docs_page"] == 2
    assert rules["product_page"] == 1
    assert "careers_page" not in rules
    assert state["fit_score"] > 0
    assert state["score"] > state["fit_score"]

    # Each record is on its topic once.
    topics = [names + t for t in ("web-visits", "email-events", "content-downloads", "webinar-events")]
    topics += [names + "lead-profiles", names + "lead-identities"]
    records = run(read_until(bootstrap, topics, lambda rs: len(rs) >= 8, timeout_s=WAIT_S, settle_s=3.0))
    of = {t: [r for r in records if r.topic == names + t] for t in ("web-visits", "email-events", "lead-identities")}
    # Under the lead: the token's pricing visit (the collector's) and the released docs visit (the worker's).
    lead_urls = {v["url"].removeprefix("https://www.example.com") for v in by_key(of["web-visits"], lead.encode())}
    assert lead_urls == {"/pricing", "/docs/api", "/docs/sdk", "/product"}
    pixel_visits = [v for v in by_key(of["web-visits"], lead.encode()) if "anonymous_id" not in v]
    assert [v["url"] for v in pixel_visits] == ["https://www.example.com/pricing"]
    anonymous_urls = [
        v["url"].removeprefix("https://www.example.com") for v in by_key(of["web-visits"], anon_id.encode())
    ]
    assert anonymous_urls == ["/docs/api", "/docs/sdk", "/product"]
    assert [e["event_id"] for e in by_key(of["email-events"], lead.encode())] == [f"sg-open-{lead}"]
    identifies = [r for r in of["lead-identities"] if r.json()["type"] == "identify"]
    assert len(identifies) == 2  # both calls are on the topic, with one event_id
    assert identifies[0].json()["event_id"] == identifies[1].json()["event_id"]
    assert identifies[0].key == f"anon:{anon_id}".encode()
    assert (identifies[0].json()["anonymous_id"], identifies[0].json()["lead_id"]) == (anon_id, lead)
    email_messages = [r for r in of["lead-identities"] if r.json()["type"] == "email_event"]
    assert len(email_messages) == 1
    assert email_messages[0].key == f"email:{email_hash(address)}".encode()
    assert address.encode() not in email_messages[0].value
    assert email_messages[0].json()["event"]["event_id"] == f"sg-click-{lead}"


def test_collector_without_a_broker_answers_503_and_the_pixel_its_gif(
    collector_factory: Callable[..., CollectorProcess],
) -> None:
    collector = collector_factory(
        wait_ready=False,
        LEADSCORE_BOOTSTRAP=f"127.0.0.1:{free_port()}",
        LEADSCORE_COLLECTOR_WRITE_KEYS=WRITE_KEY,
    )
    assert collector.request("GET", "/readyz").status == 503
    assert collector.request("GET", "/livez").status == 200
    event = {"type": "web_visit", "event_id": "e", "lead_id": "L", "occurred_at": 1, "url": "/"}
    answer = collector.post_json("/v1/events", event, key=WRITE_KEY)
    assert answer.status == 503
    assert "Retry-After" in answer.headers
    gif = collector.pixel("u=/pricing")
    assert (gif.status, gif.body) == (200, GIF)
    assert collector.metric('leadscore_collector_produce_failures_total{source="pixel"}') == 1
