"""The collector's HTTP handlers: pixel, events API, identify, SendGrid webhook, probes, metrics."""

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from aiohttp import web
from jsonschema.exceptions import best_match
from prometheus_client import generate_latest

from collector.auth import WriteKeys
from collector.bots import bot_kind
from collector.metrics import CollectorMetrics
from collector.pixel import ANON_COOKIE, GIF, NO_CACHE, TOKEN_COOKIE, do_not_track, new_anonymous_id, visit_event
from collector.producer import Outgoing, Producer, Unavailable
from collector.ratelimit import RateLimiter
from collector.recent import RecentIds
from collector.sendgrid import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    IdentityRecord,
    Ignored,
    load_public_key,
    map_event,
    verify_signature,
)
from collector.tokens import verify_lead_token
from collector.validation import Accepted, Rejected, schema_error, validate_event, validator
from scoring.events import EventKind
from scoring.identity import ANON_PREFIX, identify_event_id
from scoring.timeutil import format_rfc3339
from streams.settings import Settings

__all__ = ["Collector"]

log = logging.getLogger("collector")
COOKIE_MAX_AGE_S = 395 * 86_400  # 13 months
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4"


def _json(body: Any, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json", headers=headers)


def _problem(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    return _json({"error": error, "detail": detail}, status, headers)


class Collector:
    """The handlers and what they share: settings, producer, write keys, rate limiter, metrics."""

    def __init__(self, settings: Settings, producer: Producer, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.config = settings.collector
        self.producer = producer
        self.clock = clock
        self.metrics = CollectorMetrics()
        self.keys = WriteKeys(self.config.write_keys)
        self.limiter = RateLimiter(self.config.rate_per_s, self.config.burst, time.monotonic)
        self.sendgrid_key = (
            load_public_key(self.config.sendgrid_public_key) if self.config.sendgrid_public_key else None
        )
        topics = settings.topics
        self.topics = {kind: topic for topic, kind in topics.inbound().items()}
        self.identities = topics.identities
        self.recent_webhook_ids = RecentIds()

    def routes(self) -> list[web.RouteDef]:
        """Every route of the collector."""
        return [
            web.get("/t.gif", self.pixel, allow_head=False),
            web.post("/v1/events", self.events),
            web.post("/v1/batch", self.events),
            web.post("/v1/identify", self.identify),
            web.post("/webhooks/sendgrid", self.sendgrid),
            web.get("/livez", self.livez),
            web.get("/readyz", self.readyz),
            web.get("/metrics", self.metrics_view),
        ]

    @web.middleware
    async def count_requests(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        """Count every answer by route and status (the route's pattern, never the raw path)."""
        info = request.match_info.route.resource
        route = info.canonical if info is not None else "unmatched"
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            self.metrics.requests.labels(route, str(exc.status)).inc()
            raise
        self.metrics.requests.labels(route, str(response.status)).inc()
        return response

    def now_ms(self) -> int:
        """The collector's clock in epoch milliseconds."""
        return int(self.clock() * 1000)

    async def _produce(self, source: str, records: Sequence[Outgoing], kinds: Sequence[str]) -> bool:
        """Send and count; ``False`` (counted as failures) when the broker did not acknowledge."""
        if not records:
            return True
        try:
            seconds = await self.producer.send(records)
        except Unavailable as exc:
            self.metrics.produce_failures.labels(source).inc(len(records))
            log.warning("produce failed", extra={"source": source, "records": len(records), "error": str(exc)})
            return False
        self.metrics.produce_latency.observe(seconds)
        for kind in kinds:
            self.metrics.accepted.labels(source, kind).inc()
        return True

    # -- the pixel -----------------------------------------------------------------------------------

    async def pixel(self, request: web.Request) -> web.Response:
        """``GET /t.gif``: always the GIF; records a web visit unless a bot, a prefetch or DNT."""
        response = web.Response(body=GIF, content_type="image/gif", headers=NO_CACHE)
        try:
            await self._record_visit(request, response)
        except Exception:  # a broken pixel must never show in a page
            log.exception("pixel request failed")
            self.metrics.rejected.labels("pixel", "internal_error").inc()
        return response

    def _cookie(self, response: web.Response, name: str, value: str) -> None:
        response.set_cookie(
            name,
            value,
            max_age=COOKIE_MAX_AGE_S,
            path="/",
            domain=self.config.cookie_domain or None,
            secure=self.config.cookie_secure,
            httponly=True,
            samesite="Lax",
        )

    def _lead_of(self, request: web.Request, response: web.Response) -> str | None:
        secret = self.config.token_secret
        given = request.query.get("lt")
        if given:
            lead_id = verify_lead_token(given, secret)
            if lead_id is None:
                self.metrics.bad_tokens.inc()
                return None
            self._cookie(response, TOKEN_COOKIE, given)
            return lead_id
        kept = request.cookies.get(TOKEN_COOKIE)
        if kept:
            lead_id = verify_lead_token(kept, secret)
            if lead_id is None:
                self.metrics.bad_tokens.inc()
                response.del_cookie(TOKEN_COOKIE, path="/", domain=self.config.cookie_domain or None)
            return lead_id
        return None

    async def _record_visit(self, request: web.Request, response: web.Response) -> None:
        kind = bot_kind(request.headers)
        if kind is not None:
            self.metrics.bots.labels(kind).inc()
            return
        if self.config.honour_dnt and do_not_track(request.headers):
            self.metrics.do_not_track.inc()
            return
        lead_id = self._lead_of(request, response)
        anonymous_id = request.cookies.get(ANON_COOKIE)
        if anonymous_id is not None and not 0 < len(anonymous_id) <= 256:
            anonymous_id = None
        if lead_id is None and anonymous_id is None:
            anonymous_id = new_anonymous_id()
            self._cookie(response, ANON_COOKIE, anonymous_id)
        event = visit_event(
            request.query, request.headers.get("Referer", ""), self.now_ms(), lead_id=lead_id, anonymous_id=anonymous_id
        )
        if event is None:
            self.metrics.rejected.labels("pixel", "missing_url").inc()
            return
        key = lead_id if lead_id is not None else anonymous_id
        assert key is not None
        kind_label = "web_visit" if lead_id is not None else "anonymous_visit"
        await self._produce(
            "pixel", [(self.topics[EventKind.WEB_VISIT], key.encode(), orjson.dumps(event))], [kind_label]
        )

    # -- the API -------------------------------------------------------------------------------------

    async def _guard(self, request: web.Request) -> tuple[str | None, web.Response | None]:
        """The caller's write key fingerprint, or the 401/429 answer."""
        client = self.keys.client(request.headers)
        if client is None:
            self.metrics.unauthorized.inc()
            return None, _problem(
                401, "unauthorized", "send a write key: Authorization: Bearer <key>", {"WWW-Authenticate": "Bearer"}
            )
        wait = self.limiter.take(client)
        if wait:
            self.metrics.rate_limited.inc()
            return None, _problem(
                429, "rate_limited", f"over {self.config.rate_per_s:g} requests/s", {"Retry-After": str(wait)}
            )
        return client, None

    async def _body(self, request: web.Request) -> tuple[bytes | None, web.Response | None]:
        limit = self.config.body_limit_bytes
        if request.content_length is not None and request.content_length > limit:
            self.metrics.too_large.inc()
            return None, _problem(413, "too_large", f"the body is over {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.content.iter_any():  # a chunked body is counted as it comes
                size += len(chunk)
                if size > limit:
                    self.metrics.too_large.inc()
                    return None, _problem(413, "too_large", f"the body is over {limit} bytes")
                chunks.append(chunk)
        except (ConnectionError, web.HTTPException):
            return None, _problem(400, "bad_request", "the body could not be read")
        return b"".join(chunks), None

    async def _json_body(self, request: web.Request) -> tuple[Any, web.Response | None]:
        body, problem = await self._body(request)
        if problem is not None:
            return None, problem
        try:
            return orjson.loads(body or b""), None
        except orjson.JSONDecodeError as exc:
            return None, _problem(400, "invalid_json", f"the body is not JSON: {str(exc)[:200]}")

    async def events(self, request: web.Request) -> web.Response:
        """``POST /v1/events`` and ``/v1/batch``: one event, an array, or ``{"batch": [...]}``."""
        _, problem = await self._guard(request)
        if problem is None:
            data, problem = await self._json_body(request)
        if problem is not None:
            return problem
        listed = data.get("batch", data.get("events")) if isinstance(data, dict) else data
        events: list[Any] = listed if isinstance(listed, list) else [data]
        records: list[Outgoing] = []
        kinds: list[str] = []
        rejected: list[dict[str, Any]] = []
        for index, event in enumerate(events):
            result = validate_event(event)
            if isinstance(result, Rejected):
                self.metrics.rejected.labels("api", result.reason).inc()
                rejected.append({"index": index, "reason": result.reason, "detail": result.detail})
                continue
            records.append((self.topics[result.kind], result.key, result.value))
            kinds.append(result.kind.value)
        if not await self._produce("api", records, kinds):
            return _problem(
                503, "unavailable", "the Kafka cluster did not acknowledge; retry later", {"Retry-After": "5"}
            )
        status = 400 if rejected and not records else 202
        return _json({"accepted": len(records), "rejected": rejected}, status)

    async def identify(self, request: web.Request) -> web.Response:
        """``POST /v1/identify`` ``{"anonymous_id", "lead_id"}``: the visitor is this lead."""
        _, problem = await self._guard(request)
        if problem is None:
            data, problem = await self._json_body(request)
        if problem is not None:
            return problem
        if not isinstance(data, dict):
            return _problem(400, "not_an_object", "the body must be a JSON object")
        anonymous_id, lead_id = data.get("anonymous_id"), data.get("lead_id")
        message = {
            "type": "identify",
            "event_id": data.get("event_id", identify_event_id(anonymous_id, lead_id)),
            "anonymous_id": anonymous_id,
            "lead_id": lead_id,
            "occurred_at": data.get("occurred_at", format_rfc3339(self.now_ms())),
        }
        message = {name: value for name, value in message.items() if value is not None}
        error = best_match(validator("lead_identity").iter_errors(message))
        if error is not None:
            rejected = schema_error(error)
            self.metrics.rejected.labels("identify", rejected.reason).inc()
            return _problem(400, rejected.reason, rejected.detail)
        record = (self.identities, f"{ANON_PREFIX}{anonymous_id}".encode(), orjson.dumps(message))
        if not await self._produce("identify", [record], ["identify"]):
            return _problem(
                503, "unavailable", "the Kafka cluster did not acknowledge; retry later", {"Retry-After": "5"}
            )
        return _json({"accepted": 1, "rejected": []}, 202)

    # -- SendGrid ------------------------------------------------------------------------------------

    async def sendgrid(self, request: web.Request) -> web.Response:
        """``POST /webhooks/sendgrid``: the Event Webhook's JSON array, its signature checked when a
        verification key is set."""
        body, problem = await self._body(request)
        if problem is not None:
            return problem
        assert body is not None
        if self.sendgrid_key is not None:
            signature = request.headers.get(SIGNATURE_HEADER, "")
            timestamp = request.headers.get(TIMESTAMP_HEADER, "")
            if not signature or not timestamp or not verify_signature(self.sendgrid_key, body, signature, timestamp):
                self.metrics.bad_signatures.inc()
                return _problem(401, "bad_signature", f"{SIGNATURE_HEADER} does not verify")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return _problem(400, "invalid_json", f"the body is not JSON: {str(exc)[:200]}")
        if not isinstance(data, list):
            return _problem(400, "not_an_array", "the Event Webhook sends a JSON array of events")
        records: list[Outgoing] = []
        kinds: list[str] = []
        rejected: list[dict[str, Any]] = []
        ignored = 0
        sent_ids: list[str] = []
        duplicates = 0
        for index, event in enumerate(data):
            event_id = event.get("sg_event_id") if isinstance(event, dict) else None
            if isinstance(event_id, str) and event_id in self.recent_webhook_ids:
                self.metrics.webhook_duplicates.inc()  # a retried call: already on Kafka
                duplicates += 1
                continue
            result = map_event(event)
            if isinstance(result, Ignored):
                ignored += 1
                self.metrics.ignored.labels(result.event_type[:32]).inc()
            elif isinstance(result, Rejected):
                self.metrics.rejected.labels("sendgrid", result.reason).inc()
                rejected.append({"index": index, "reason": result.reason, "detail": result.detail})
            elif isinstance(result, IdentityRecord):
                records.append((self.identities, result.key, result.value))
                kinds.append("email_identity")
                sent_ids.append(str(event_id))
            else:
                assert isinstance(result, Accepted)
                records.append((self.topics[result.kind], result.key, result.value))
                kinds.append(result.kind.value)
                sent_ids.append(str(event_id))
        if not await self._produce("sendgrid", records, kinds):
            return _problem(
                503, "unavailable", "the Kafka cluster did not acknowledge; retry later", {"Retry-After": "5"}
            )
        self.recent_webhook_ids.add(sent_ids)
        answer = {"accepted": len(records), "duplicates": duplicates, "ignored": ignored, "rejected": rejected}
        return _json(answer, 200)

    # -- probes and metrics --------------------------------------------------------------------------

    async def livez(self, request: web.Request) -> web.Response:
        """The process answers."""
        return _json({"status": "ok"}, 200)

    async def readyz(self, request: web.Request) -> web.Response:
        """Ready when the producer is connected to the cluster."""
        ready = self.producer.ready
        return _json({"ready": ready, "kafka_connected": ready}, 200 if ready else 503)

    async def metrics_view(self, request: web.Request) -> web.Response:
        """Prometheus text format."""
        return web.Response(body=generate_latest(self.metrics.registry), content_type=METRICS_CONTENT_TYPE)
