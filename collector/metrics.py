"""The collector's Prometheus metrics (no personal data in any label)."""

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["CollectorMetrics"]


class CollectorMetrics:
    """Requests, events accepted and rejected by reason, bots, bad tokens and signatures, and the
    time the broker takes to acknowledge."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "leadscore_collector_requests",
            "HTTP requests answered, by route and status.",
            ["route", "status"],
            registry=r,
        )
        self.accepted = Counter(
            "leadscore_collector_events_accepted",
            "Events acknowledged by the broker, by source (pixel, api, identify, sendgrid) and topic kind.",
            ["source", "kind"],
            registry=r,
        )
        self.rejected = Counter(
            "leadscore_collector_events_rejected",
            "Events refused, by source and reason (missing_field, wrong_type, invalid_value, ...).",
            ["source", "reason"],
            registry=r,
        )
        self.bots = Counter(
            "leadscore_collector_bots",
            "Pixel requests not recorded: bots, prefetches, no User-Agent.",
            ["kind"],
            registry=r,
        )
        self.do_not_track = Counter(
            "leadscore_collector_do_not_track", "Pixel requests not recorded because of DNT or GPC.", registry=r
        )
        self.bad_tokens = Counter(
            "leadscore_collector_bad_tokens",
            "Pixel lead tokens that did not verify (the visit stays anonymous).",
            registry=r,
        )
        self.bad_signatures = Counter(
            "leadscore_collector_bad_signatures", "Webhook calls refused for a missing or wrong signature.", registry=r
        )
        self.unauthorized = Counter(
            "leadscore_collector_unauthorized", "API calls without a known write key.", registry=r
        )
        self.rate_limited = Counter("leadscore_collector_rate_limited", "API calls answered 429.", registry=r)
        self.too_large = Counter("leadscore_collector_too_large", "Request bodies over the limit (413).", registry=r)
        self.ignored = Counter(
            "leadscore_collector_webhook_ignored",
            "Webhook events of types not scored, by type.",
            ["event_type"],
            registry=r,
        )
        self.webhook_duplicates = Counter(
            "leadscore_collector_webhook_duplicates",
            "Webhook events this process had already sent (a retried call), not sent again.",
            registry=r,
        )
        self.produce_failures = Counter(
            "leadscore_collector_produce_failures",
            "Events the broker did not acknowledge in time, by source (the pixel still answers its GIF).",
            ["source"],
            registry=r,
        )
        self.produce_latency = Histogram(
            "leadscore_collector_produce_seconds",
            "From a request's first send to the broker's acknowledgement of all its events.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )
        for reason in ("missing_field", "wrong_type", "invalid_value", "unknown_type", "not_an_object"):
            self.rejected.labels("api", reason)
        for source in ("pixel", "api", "identify", "sendgrid"):
            self.produce_failures.labels(source)
