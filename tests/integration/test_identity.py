"""Identity stitching on the real broker, the worker as a separate process: anonymous visits
released to their lead on identify (sent twice), each counted once; an e-mail event parked under
an address pseudonym, scored once a profile names the address; conflicts and bad messages
dead-lettered."""

import time
from collections.abc import Callable

import orjson
import pytest

from scoring.identity import email_hash
from scoring.partitioner import key_partition
from tests.integration.kafka import Received, produce, read_until, run
from tests.integration.waits import WAIT_S, counts, wait_for_lead, wait_for_metric
from tests.integration.worker import WorkerProcess

PARTITIONS = 4  # the worker_factory's


def anonymous_visit(anon: str, event_id: str, at: int, url: str) -> bytes:
    return orjson.dumps({"event_id": event_id, "anonymous_id": anon, "occurred_at": at, "url": url})


def identify(anon: str, lead: str, at: int) -> bytes:
    message = {"type": "identify", "event_id": f"identify-{anon}-{lead}", "anonymous_id": anon, "lead_id": lead}
    return orjson.dumps({**message, "occurred_at": at})


def reasons(records: list[Received]) -> list[str]:
    return [r.json()["reason"] for r in records]


@pytest.mark.parametrize("consumption", ["batch", "agent"])
def test_anonymous_visits_count_once_for_the_lead_after_identify_and_later_ones_directly(
    worker_factory: Callable[..., WorkerProcess], bootstrap: str, names: str, consumption: str
) -> None:
    worker = worker_factory(LEADSCORE_CONSUMPTION=consumption)
    visits, identities = names + "web-visits", names + "lead-identities"
    now = int(time.time() * 1000)
    run(
        produce(
            bootstrap, [(visits, b"anon-1", anonymous_visit("anon-1", f"v{i}", now + i, "/pricing")) for i in range(3)]
        )
    )
    # The visits are parked before the identify arrives (they pass through the scorer first).
    assert wait_for_metric(worker, "leadscore_identity_events_total", 'outcome="parked"', 3) == 3
    assert worker.get("/leads/L1")[0] == 404  # nothing scored for anyone yet
    run(produce(bootstrap, [(identities, b"anon:anon-1", identify("anon-1", "L1", now + 10))] * 2))
    lead = wait_for_lead(worker, "L1", lambda body: counts(body).get("pricing_page", 0) >= 3)
    assert counts(lead) == {"page_view": 3, "pricing_page": 3}
    # A later anonymous visit under the linked id counts directly; a relink to another lead is refused.
    run(produce(bootstrap, [(visits, b"anon-1", anonymous_visit("anon-1", "v9", now + 20, "/features"))]))
    run(produce(bootstrap, [(identities, b"anon:anon-1", identify("anon-1", "L2", now + 30))]))
    lead = wait_for_lead(worker, "L1", lambda body: "product_page" in counts(body))
    dead = run(
        read_until(bootstrap, [names + "lead-dead-letters"], lambda r: len(r) >= 1, timeout_s=WAIT_S, settle_s=3)
    )
    assert reasons(dead) == ["identity_conflict"]
    assert counts(lead) == {"page_view": 4, "pricing_page": 3, "product_page": 1}
    # Released once: the second identify released nothing, so each visit reached web-visits once under L1.
    released = run(read_until(bootstrap, [visits], lambda r: len([x for x in r if x.key == b"L1"]) >= 4, settle_s=2))
    assert sorted(r.json()["event_id"] for r in released if r.key == b"L1") == ["v0", "v1", "v2", "v9"]
    assert all(r.json()["lead_id"] == "L1" for r in released if r.key == b"L1")
    # Sent without a partition: the worker's producer placed them where Kafka's default partitioner
    # puts the lead id (scoring.partitioner.producer_partition), with the lead's other events.
    assert {r.partition for r in released if r.key == b"L1"} == {key_partition(b"L1", PARTITIONS)}
    assert worker.metric("leadscore_identity_events_total", 'outcome="forwarded"') == 4
    assert worker.metric("leadscore_identity_links_total", 'result="linked"') == 1
    assert worker.metric("leadscore_identity_links_total", 'result="repeated"') == 1
    assert worker.metric("leadscore_identity_links_total", 'result="conflict"') == 1
    assert worker.get("/leads/L2")[0] == 404


def test_an_email_event_waits_for_the_profile_that_names_its_address(
    worker_factory: Callable[..., WorkerProcess], bootstrap: str, names: str
) -> None:
    worker = worker_factory()
    now = int(time.time() * 1000)
    hashed = email_hash("jane.doe@example.com")
    click = {"event_id": "sg-1", "occurred_at": now, "action": "click", "campaign_id": "c1", "url": "/pricing"}
    parked = orjson.dumps({"type": "email_event", "email_hash": hashed, "event": click})
    identities = names + "lead-identities"
    run(produce(bootstrap, [(identities, f"email:{hashed}".encode(), parked), (identities, b"anon:x", b"not json")]))
    wait_for_metric(worker, "leadscore_identity_events_total", 'outcome="parked"', 1)
    profile = {"event_id": "p1", "lead_id": "L7", "occurred_at": now + 5, "email": "Jane.Doe@example.com"}
    run(produce(bootstrap, [(names + "lead-profiles", b"L7", orjson.dumps(profile))]))
    lead = wait_for_lead(worker, "L7", lambda body: "email_click" in counts(body))
    assert counts(lead) == {"email_click": 1}
    # The worker told the identity agent the address's pseudonym, never the address.
    sent = run(
        read_until(
            bootstrap,
            [identities],
            lambda r: any(x.key == f"email:{hashed}".encode() and b"email_known" in (x.value or b"") for x in r),
        )
    )
    assert all(b"jane" not in (r.value or b"").lower() for r in sent)
    dead = run(read_until(bootstrap, [names + "lead-dead-letters"], lambda r: len(r) >= 1, timeout_s=WAIT_S))
    assert reasons(dead) == ["invalid_json"]
    assert worker.metric("leadscore_identity_messages_sent_total", 'type="email_known"') == 1


def test_parked_visits_survive_a_restart_through_the_identity_table_changelog(
    worker_factory: Callable[..., WorkerProcess], bootstrap: str, names: str
) -> None:
    first = worker_factory(0)
    now = int(time.time() * 1000)
    visits = [
        (names + "web-visits", b"anon-r", anonymous_visit("anon-r", f"r{i}", now + i, "/pricing")) for i in range(2)
    ]
    run(produce(bootstrap, visits))
    wait_for_metric(first, "leadscore_identity_events_total", 'outcome="parked"', 2)
    first.stop()
    # A new data directory: the parked visits can only come back from the changelog topic.
    second = worker_factory(1)
    run(produce(bootstrap, [(names + "lead-identities", b"anon:anon-r", identify("anon-r", "LR", now + 10))]))
    lead = wait_for_lead(second, "LR", lambda body: counts(body).get("pricing_page", 0) >= 2)
    assert counts(lead) == {"page_view": 2, "pricing_page": 2}
    assert second.metric("leadscore_identity_events_total", 'outcome="parked"') == 0  # nothing redelivered
