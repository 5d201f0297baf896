"""Web views on the worker's port: metrics, probes, a lead's score, and the funnel."""

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import generate_latest

from scoring.funnel import funnel
from scoring.sources import normalise_source
from scoring.state import LeadState, decode_state
from streams.faust_internals import drain_loop_age

if TYPE_CHECKING:
    from streams.app import Service

LIVENESS_STALL_S = 120.0  # longer than any batch or rebalance should take

# Prometheus' text format 0.0.4; aiohttp adds the charset itself.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4"


def lead_state(service: "Service", lead_id: str) -> LeadState | None:
    """A lead's latest state: the one held back from the table while its partition catches up
    (write-behind), else the table's; None for an unknown lead."""
    key = lead_id.encode()
    for held in service.unwritten.values():
        if key in held.states:
            return held.states[key]
    raw = service.leads.get(key)
    return None if raw is None else decode_state(raw)


def local_states(service: "Service") -> Iterator[LeadState]:
    """The states of the leads whose partitions this worker owns (the table may still hold others
    after a rebalance)."""
    inbound = set(service.settings.topics.inbound())
    actives = {tp.partition for tp in service.app.assignor.assigned_actives() if tp.topic in inbound}
    for _key, raw in service.leads.items():
        state = decode_state(raw)
        if state.partition in actives:
            yield state


def register_views(service: "Service") -> None:
    """Register ``/metrics``, ``/livez``, ``/readyz``, ``/leads/{lead_id}`` and ``/funnel``."""
    app = service.app

    @app.page("/funnel")  # type: ignore[untyped-decorator]
    async def funnel_view(web: Any, request: Any) -> Any:
        if not service.recovered:
            return web.json({"error": "the lead table is not recovered yet"}, status=503)
        body = funnel(local_states(service)).to_payload()
        body["as_of_ms"] = service.clock.now_ms()
        body["scope"] = "the leads of this worker's partitions"
        return web.json(body)

    @app.page("/metrics")  # type: ignore[untyped-decorator]
    async def metrics(web: Any, request: Any) -> Any:
        # ``?name[]=a&name[]=b`` restricts the answer to those samples, as prometheus_client's own
        # handlers do: a poller of one counter does not pay for rendering every metric.
        names = request.query.getall("name[]", [])
        registry = service.metrics.registry
        chosen = registry.restricted_registry(names) if names else registry
        return web.bytes(generate_latest(chosen), content_type=METRICS_CONTENT_TYPE)

    @app.page("/livez")  # type: ignore[untyped-decorator]
    async def livez(web: Any, request: Any) -> Any:
        # Answering proves the event loop runs; the fetch loop must also go round (it does at
        # least every second when idle), or the worker is stuck and should be restarted.
        age = drain_loop_age(app) if service.settings.consumption == "batch" else None
        if age is not None and age > LIVENESS_STALL_S and service.dead_letter_blocked is None:
            return web.json({"status": "stalled", "fetch_loop_idle_seconds": round(age, 1)}, status=503)
        return web.json({"status": "ok"})

    @app.page("/readyz")  # type: ignore[untyped-decorator]
    async def readyz(web: Any, request: Any) -> Any:
        ready = service.recovered and not app.rebalancing and service.dead_letter_blocked is None
        body: dict[str, object] = {
            "ready": ready,
            "table_recovered": service.recovered,
            "rebalancing": bool(app.rebalancing),
        }
        if service.dead_letter_blocked is not None:  # a restart does not help: the topic must take records
            body["reason"] = service.dead_letter_blocked
        return web.json(body, status=200 if ready else 503)

    @app.page("/leads/{lead_id}")  # type: ignore[untyped-decorator]
    @app.table_route(table=service.leads, match_info="lead_id")  # type: ignore[untyped-decorator]
    async def lead(web: Any, request: Any, lead_id: str) -> Any:
        origin = service.settings.collector.worker_cors_origin  # the demo page's live score
        cors = {"Access-Control-Allow-Origin": origin} if origin else None
        state = lead_state(service, lead_id)
        if state is None:
            return web.json({"error": "unknown lead", "lead_id": lead_id}, status=404, headers=cors)
        now_ms = service.clock.now_ms()
        score = service.scorer.score_at(state, now_ms)
        return web.json(
            {
                "lead_id": state.lead_id,
                "stage": state.stage.value,
                "score": score.score,
                "fit_score": score.fit,
                "engagement_score": score.engagement,
                "breakdown": [row.to_payload() for row in score.breakdown],
                "crossings": state.crossings,
                "stage_times_ms": {
                    "mql": state.mql_at,
                    "sal": state.sal_at,
                    "sql": state.sql_at,
                    "won": state.won_at,
                },
                "mql_rules_version": state.mql_rules_version,
                "first_touch_source": normalise_source(state.source),
                "last_activity_ms": state.last_event_at,
                "due_for_nurture_ms": state.due_at,
                "as_of_ms": now_ms,
                "rules_version": service.scorer.rules.version,
            },
            headers=cors,
        )
