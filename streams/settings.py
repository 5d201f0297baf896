"""The service's settings: one frozen object, read from the environment here and nowhere else."""

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from scoring.events import EventKind

PREFIX = "LEADSCORE_"
DEFAULT_RULES_FILE = Path(__file__).resolve().parent.parent / "scoring" / "default_rules.toml"


class SettingsError(ValueError):
    """An environment variable has a value the service cannot use."""


@dataclass(frozen=True)
class TopicNames:
    """Topic names; every one can be overridden, and all share the optional prefix."""

    web_visits: str = "web-visits"
    email_events: str = "email-events"
    content_downloads: str = "content-downloads"
    webinar_events: str = "webinar-events"
    lead_profiles: str = "lead-profiles"
    sales_feedback: str = "sales-feedback"
    mql_handoff: str = "mql-handoff"
    lead_nurture: str = "lead-nurture"
    dead_letters: str = "lead-dead-letters"
    ticks: str = "lead-ticks"
    # Anonymous visits, identify calls and e-mail events waiting for their lead (agents/identity.py).
    identities: str = "lead-identities"
    # Erasure requests (GDPR), keyed by lead id: inbound, co-partitioned with the lead table.
    erasures: str = "lead-erasures"

    def inbound(self) -> dict[str, EventKind]:
        """Inbound topic name -> the kind of event it carries."""
        return {
            self.web_visits: EventKind.WEB_VISIT,
            self.email_events: EventKind.EMAIL_EVENT,
            self.content_downloads: EventKind.CONTENT_DOWNLOAD,
            self.webinar_events: EventKind.WEBINAR_EVENT,
            self.lead_profiles: EventKind.LEAD_PROFILE,
            self.sales_feedback: EventKind.SALES_FEEDBACK,
            self.erasures: EventKind.ERASURE,
        }

    def all(self) -> list[str]:
        """Every topic the service reads or writes (not Faust's own changelog)."""
        return [getattr(self, f.name) for f in fields(self)]


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


@dataclass(frozen=True)
class KafkaSecurity:
    """How every Kafka client connects (streams/kafka_clients.py); the password is never in the repr."""

    protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    sasl_mechanism: str = ""  # SCRAM-SHA-512 (the default with SASL), SCRAM-SHA-256 or PLAIN
    username: str = ""
    password: str = field(default="", repr=False)
    password_file: Path | None = None  # where the password was read from, if from a file
    cafile: Path | None = None  # CA certificates of the brokers (default: the system's)
    certfile: Path | None = None  # client certificate (mutual TLS), optionally with its key
    keyfile: Path | None = None

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol.endswith("SSL")

    def describe(self) -> str:
        """E.g. ``SASL_SSL (SCRAM-SHA-512, user 'leadscore')``: for messages, never with the password."""
        return f"{self.protocol} ({self.sasl_mechanism}, user {self.username!r})" if self.sasl else self.protocol


def _kafka_security(env: Mapping[str, str]) -> KafkaSecurity:
    """LEADSCORE_SECURITY_PROTOCOL, LEADSCORE_SASL_* and LEADSCORE_SSL_*; a password from both the
    variable and a file is refused (which one is meant is not guessed)."""

    def value(name: str) -> str:
        return env.get(PREFIX + name, "").strip()

    protocol = (value("SECURITY_PROTOCOL") or "PLAINTEXT").upper()
    if protocol not in SECURITY_PROTOCOLS:
        raise SettingsError(
            f"{PREFIX}SECURITY_PROTOCOL must be one of {', '.join(SECURITY_PROTOCOLS)}, got {protocol!r}"
        )
    sasl_names = ("SASL_MECHANISM", "SASL_USERNAME", "SASL_PASSWORD", "SASL_PASSWORD_FILE")
    ssl_names = ("SSL_CAFILE", "SSL_CERTFILE", "SSL_KEYFILE")
    plain = KafkaSecurity(protocol=protocol)
    for names, used, wanted in (
        (sasl_names, plain.sasl, "SASL_SSL or SASL_PLAINTEXT"),
        (ssl_names, plain.tls, "SSL or SASL_SSL"),
    ):
        stray = [PREFIX + name for name in names if value(name)]
        if stray and not used:  # e.g. a forgotten LEADSCORE_SECURITY_PROTOCOL
            raise SettingsError(f"{stray[0]} is set but {PREFIX}SECURITY_PROTOCOL is {protocol}, not {wanted}")
    files: dict[str, Path | None] = {}
    for name in ssl_names:
        path = Path(value(name)) if value(name) else None
        if path is not None and not path.is_file():
            raise SettingsError(f"{PREFIX}{name}: no such file {path}")
        files[name] = path
    if files["SSL_KEYFILE"] and not files["SSL_CERTFILE"]:
        raise SettingsError(f"{PREFIX}SSL_KEYFILE needs {PREFIX}SSL_CERTFILE (the client certificate)")
    security = KafkaSecurity(
        protocol=protocol, cafile=files["SSL_CAFILE"], certfile=files["SSL_CERTFILE"], keyfile=files["SSL_KEYFILE"]
    )
    if not security.sasl:
        return security
    mechanism = (value("SASL_MECHANISM") or "SCRAM-SHA-512").upper()
    if mechanism not in SASL_MECHANISMS:
        raise SettingsError(f"{PREFIX}SASL_MECHANISM must be one of {', '.join(SASL_MECHANISMS)}, got {mechanism!r}")
    username = value("SASL_USERNAME")
    if not username:
        raise SettingsError(f"{PREFIX}SECURITY_PROTOCOL={protocol} needs {PREFIX}SASL_USERNAME")
    password, password_file = env.get(PREFIX + "SASL_PASSWORD", ""), value("SASL_PASSWORD_FILE")
    if password and password_file:
        raise SettingsError(f"set {PREFIX}SASL_PASSWORD or {PREFIX}SASL_PASSWORD_FILE, not both")
    if password_file:
        try:
            password = Path(password_file).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise SettingsError(f"cannot read {PREFIX}SASL_PASSWORD_FILE {password_file}: {reason}") from None
        if not password:
            raise SettingsError(f"{PREFIX}SASL_PASSWORD_FILE {password_file} is empty")
    elif not password:
        raise SettingsError(
            f"{PREFIX}SECURITY_PROTOCOL={protocol} needs {PREFIX}SASL_PASSWORD or {PREFIX}SASL_PASSWORD_FILE"
        )
    return KafkaSecurity(
        protocol=protocol,
        sasl_mechanism=mechanism,
        username=username,
        password=password,
        password_file=Path(password_file) if password_file else None,
        cafile=security.cafile,
        certfile=security.certfile,
        keyfile=security.keyfile,
    )


@dataclass(frozen=True)
class IdentitySettings:
    """How anonymous visits and e-mail events wait for their lead (agents/identity.py)."""

    window_days: float = 30.0  # parked events older than this are dropped (and counted)
    max_parked: int = 100  # events parked per anonymous id or e-mail address, at most
    # How often each worker has the keys of its lead-identities partitions swept: keys whose parked
    # events all outlived the window are deleted (agents/identity.py, scoring/identity_sweep.py).
    sweep_interval_s: float = 3600.0


def _identity_settings(env: Mapping[str, str]) -> IdentitySettings:
    defaults = IdentitySettings()
    return IdentitySettings(
        window_days=_number(env, "IDENTITY_WINDOW_DAYS", defaults.window_days, 0.0001),
        max_parked=int(_number(env, "IDENTITY_MAX_PARKED", defaults.max_parked, 1)),
        sweep_interval_s=_number(env, "IDENTITY_SWEEP_INTERVAL", defaults.sweep_interval_s, 0.1),
    )


@dataclass(frozen=True)
class CollectorSettings:
    """The collector (``leadscore collect``): pixel, events API and webhooks in front of Kafka."""

    host: str = "127.0.0.1"
    port: int = 6070
    # HMAC secret of lead tokens (``leadscore token``); empty: no token verifies, visits stay anonymous.
    token_secret: str = ""
    # Write keys of the events API: LEADSCORE_COLLECTOR_WRITE_KEYS (comma list) and/or one per line of
    # LEADSCORE_COLLECTOR_WRITE_KEYS_FILE (blank lines and # comments skipped).
    write_keys: tuple[str, ...] = ()
    body_limit_bytes: int = 1_048_576  # larger request bodies get 413
    rate_per_s: float = 200.0  # events API requests per second and write key (token bucket)
    burst: int = 400
    sendgrid_public_key: str = ""  # the Event Webhook's verification key (base64 DER); empty: no check
    honour_dnt: bool = True  # DNT: 1 or Sec-GPC: 1 -> the pixel records nothing
    cookie_domain: str = ""  # e.g. ".example.com" when the collector runs on a subdomain of the site
    cookie_secure: bool = False  # mark cookies Secure (the collector is served over HTTPS)
    produce_timeout_s: float = 10.0  # a request waits this long for the broker, then 503
    # The origin of a page allowed to read a worker's /leads/{id} from a browser (the demo page's
    # live score), sent as Access-Control-Allow-Origin by the worker; empty: none.
    worker_cors_origin: str = ""


@dataclass(frozen=True)
class GroupSettings:
    """The worker's consumer-group membership."""

    # How long the group waits for a silent member (a crash, a SIGSTOP) before its partitions move;
    # heartbeats go every third of it, at most every 3 s. Kafka brokers accept 6 to 1800 s by default.
    session_timeout_s: float = 60.0
    # Static membership (KIP-345): a worker restarted under the same id takes its partitions back at
    # once instead of after the session timeout. A stopped static member does not leave the group,
    # so its partitions wait the session timeout unless it comes back: give each worker its own
    # stable id (a StatefulSet pod name, a host name); None keeps dynamic membership.
    instance_id: str | None = None

    @property
    def heartbeat_interval_s(self) -> float:
        """How often the worker heartbeats to the group coordinator."""
        return min(3.0, self.session_timeout_s / 3)


_INSTANCE_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")


def _group_settings(env: Mapping[str, str]) -> GroupSettings:
    instance_id = env.get(PREFIX + "GROUP_INSTANCE_ID", "").strip() or None
    if instance_id is not None and not _INSTANCE_ID.fullmatch(instance_id):
        raise SettingsError(
            f"{PREFIX}GROUP_INSTANCE_ID must be 1-200 characters of letters, digits, '.', '_' or '-', "
            f"got {instance_id!r}"
        )
    session_timeout_s = _number(env, "SESSION_TIMEOUT", GroupSettings().session_timeout_s, 1)
    return GroupSettings(session_timeout_s=session_timeout_s, instance_id=instance_id)


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(PREFIX + name)
    if raw is None:
        return default
    if raw.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if raw.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{PREFIX}{name} must be true or false, got {raw!r}")


def _collector_settings(env: Mapping[str, str]) -> CollectorSettings:
    defaults = CollectorSettings()
    keys = [k.strip() for k in env.get(PREFIX + "COLLECTOR_WRITE_KEYS", "").split(",") if k.strip()]
    keys_file = env.get(PREFIX + "COLLECTOR_WRITE_KEYS_FILE")
    if keys_file:
        try:
            lines = Path(keys_file).read_text().splitlines()
        except OSError as exc:
            raise SettingsError(f"cannot read {PREFIX}COLLECTOR_WRITE_KEYS_FILE {keys_file}: {exc.strerror}") from None
        keys += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return CollectorSettings(
        host=env.get(PREFIX + "COLLECTOR_HOST", defaults.host),
        port=int(_number(env, "COLLECTOR_PORT", defaults.port, 1)),
        token_secret=env.get(PREFIX + "COLLECTOR_TOKEN_SECRET", defaults.token_secret),
        write_keys=tuple(dict.fromkeys(keys)),
        body_limit_bytes=int(_number(env, "COLLECTOR_BODY_LIMIT", defaults.body_limit_bytes, 1024)),
        rate_per_s=_number(env, "COLLECTOR_RATE", defaults.rate_per_s, 0.001),
        burst=int(_number(env, "COLLECTOR_BURST", defaults.burst, 1)),
        sendgrid_public_key=env.get(PREFIX + "SENDGRID_PUBLIC_KEY", defaults.sendgrid_public_key).strip(),
        honour_dnt=_flag(env, "COLLECTOR_HONOUR_DNT", defaults.honour_dnt),
        cookie_domain=env.get(PREFIX + "COLLECTOR_COOKIE_DOMAIN", defaults.cookie_domain),
        cookie_secure=_flag(env, "COLLECTOR_COOKIE_SECURE", defaults.cookie_secure),
        produce_timeout_s=_number(env, "COLLECTOR_PRODUCE_TIMEOUT", defaults.produce_timeout_s, 0.1),
        worker_cors_origin=env.get(PREFIX + "WORKER_CORS_ORIGIN", defaults.worker_cors_origin).strip(),
    )


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs; see the README's configuration table."""

    bootstrap: str = "127.0.0.1:9092"
    app_id: str = "leadscore"
    topic_prefix: str = ""
    topics: TopicNames = field(default_factory=TopicNames)
    partitions: int = 8
    replication_factor: int = 1
    store: str = "rocksdb://"
    data_dir: Path = Path("var/leadscore")
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    # How other workers reach this one's web server (lead queries are routed to the owner);
    # defaults to http://WEB_HOST:WEB_PORT, which is wrong when WEB_HOST is 0.0.0.0.
    canonical_url: str = ""
    rules_file: Path = DEFAULT_RULES_FILE
    tick_interval_s: float = 1.0
    clock_speed: float = 1.0
    clock_epoch_ms: int = 0
    log_level: str = "info"
    # "batch": each fetched batch of an inbound partition is scored at once (production);
    # "agent": one record at a time through the Faust agent (the reference path).
    consumption: str = "batch"
    # The most records one poll hands to the scoring path, over all partitions; 0: all fetched.
    max_poll_records: int = 0
    # The most bytes one fetch takes from each inbound partition (Faust's default, 1 MiB). Larger
    # fetches make larger batches in a catch-up: fewer state writes per event, more memory.
    fetch_bytes: int = 1024**2
    # How long the broker may hold a fetch for data (Faust's 1,500 ms stalled catch-ups: one fetch
    # of partitions read to their end blocks the fetches of those just drained; see
    # streams/faust_internals.py). An idle worker sends one fetch per wait.
    fetch_wait_ms: int = 100
    # The least data the broker gathers before it answers a fetch (or the fetch wait ends). 1:
    # answer as soon as anything arrived, the lowest latency; every answer is a fetch request and
    # response of every partition encoded and parsed in Python, so at a few thousand events/s
    # a worker spends most of its CPU on fetches (bench/HISTORY.md, "... fetches at low rates").
    fetch_min_bytes: int = 1
    # The most bytes of one produce batch (changelog, outputs): a catch-up poll's changelog for a
    # partition (about 2 MB) goes in a few batches, each a produce round trip (Faust's default,
    # 16 KiB, made 129). Keep it under the brokers' record-batch limit (message.max.bytes, 1 MiB by
    # default).
    produce_batch_bytes: int = 512 * 1024
    # The most decoded lead states a worker keeps per partition between batches (when full, the
    # quarter written longest ago is dropped):
    # the bulk of its memory, about 8 KiB per state (README Operating); 0 keeps none (every batch reads its
    # states from the store).
    state_cache_per_partition: int = 50_000
    # Write-behind: while a partition catches up (one of its inbound topics write_behind_min_lag
    # records behind its end), its changed states may be held back from the table for up to this
    # many seconds (and up to the cache's bound), so a lead touched in several batches is written
    # once; the batches' offsets are committed only once the states are written. 0 writes after
    # every batch. Live traffic (less far behind) writes after every batch. 30 s, as Kafka Streams'
    # commit interval (its record cache is written at each commit): 0.156 changelog records per
    # event on the benchmark's input against 0.204 with 5 s (bench/HISTORY.md).
    write_behind_s: float = 30.0
    # How many records behind its end one of a partition's inbound topics must be for the partition
    # to count as catching up (write-behind); about one catch-up batch. 0 holds live traffic's
    # writes too (fewer changelog records, but each write of held states delays the next poll).
    write_behind_min_lag: int = 5000
    # Seconds between full garbage collections, run by a timer (streams/gc_pauses.py); 0: Python's
    # own automatic ones (each walks every cached lead state: a pause of up to a second).
    gc_full_interval_s: float = 600.0
    # Whether the worker runs glibc's malloc on transparent huge pages (streams/huge_pages.py), and
    # the GLIBC_TUNABLES it was started with.
    huge_pages: bool = True
    glibc_tunables: str = ""
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    security: KafkaSecurity = field(default_factory=KafkaSecurity)  # every Kafka client (streams/kafka_clients.py)
    collector: CollectorSettings = field(default_factory=CollectorSettings)
    group: GroupSettings = field(default_factory=GroupSettings)  # LEADSCORE_SESSION_TIMEOUT, _GROUP_INSTANCE_ID

    @property
    def broker_url(self) -> str:
        """The bootstrap servers as a Faust broker URL list."""
        return ";".join(f"kafka://{server.strip()}" for server in self.bootstrap.split(","))

    @property
    def bootstrap_servers(self) -> list[str]:
        """The bootstrap servers for aiokafka clients."""
        return [server.strip() for server in self.bootstrap.split(",")]

    def rules_text(self) -> str:
        """The rules file's content."""
        try:
            return self.rules_file.read_text()
        except OSError as exc:
            raise SettingsError(f"cannot read rules file {self.rules_file}: {exc.strerror}") from None


def _number(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(PREFIX + name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{PREFIX}{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{PREFIX}{name} must be at least {minimum}, got {raw!r}")
    return value


def settings_from_env(env: Mapping[str, str] | None = None, *, topic_prefix: str | None = None) -> Settings:
    """Build the settings from ``LEADSCORE_*`` variables (``os.environ`` by default);
    ``topic_prefix`` overrides ``LEADSCORE_TOPIC_PREFIX`` (a command-line option)."""
    env = os.environ if env is None else env
    defaults = Settings()

    def text(name: str, default: str) -> str:
        return env.get(PREFIX + name, default)

    prefix = text("TOPIC_PREFIX", "") if topic_prefix is None else topic_prefix
    base = TopicNames()
    topics = TopicNames(
        **{f.name: prefix + text(f"TOPIC_{f.name.upper()}", getattr(base, f.name)) for f in fields(TopicNames)}
    )
    clock_speed = _number(env, "CLOCK_SPEED", defaults.clock_speed, 1)
    clock_epoch_ms = int(_number(env, "CLOCK_EPOCH_MS", defaults.clock_epoch_ms, 0))
    if clock_speed != 1 and clock_epoch_ms == 0:
        raise SettingsError(
            f"{PREFIX}CLOCK_SPEED needs {PREFIX}CLOCK_EPOCH_MS: the instant from which time runs fast, "
            "the same for every process"
        )
    consumption = text("CONSUMPTION", defaults.consumption)
    if consumption not in ("batch", "agent"):
        raise SettingsError(f"{PREFIX}CONSUMPTION must be 'batch' or 'agent', got {consumption!r}")
    return Settings(
        bootstrap=text("BOOTSTRAP", defaults.bootstrap),
        app_id=text("APP_ID", defaults.app_id),
        topic_prefix=prefix,
        topics=topics,
        partitions=int(_number(env, "PARTITIONS", defaults.partitions, 1)),
        replication_factor=int(_number(env, "REPLICATION_FACTOR", defaults.replication_factor, 1)),
        store=text("STORE", defaults.store),
        data_dir=Path(text("DATA_DIR", str(defaults.data_dir))),
        web_host=text("WEB_HOST", defaults.web_host),
        web_port=int(_number(env, "WEB_PORT", defaults.web_port, 1)),
        canonical_url=text("CANONICAL_URL", defaults.canonical_url),
        rules_file=Path(text("RULES_FILE", str(defaults.rules_file))),
        tick_interval_s=_number(env, "TICK_INTERVAL", defaults.tick_interval_s, 0.01),
        clock_speed=clock_speed,
        clock_epoch_ms=clock_epoch_ms,
        log_level=text("LOG_LEVEL", defaults.log_level),
        consumption=consumption,
        max_poll_records=int(_number(env, "MAX_POLL_RECORDS", defaults.max_poll_records, 0)),
        fetch_bytes=int(_number(env, "FETCH_BYTES", defaults.fetch_bytes, 65536)),
        fetch_wait_ms=int(_number(env, "FETCH_WAIT_MS", defaults.fetch_wait_ms, 10)),
        fetch_min_bytes=int(_number(env, "FETCH_MIN_BYTES", defaults.fetch_min_bytes, 1)),
        produce_batch_bytes=int(_number(env, "PRODUCE_BATCH_BYTES", defaults.produce_batch_bytes, 16384)),
        state_cache_per_partition=int(_number(env, "STATE_CACHE", defaults.state_cache_per_partition, 0)),
        write_behind_s=_number(env, "WRITE_BEHIND", defaults.write_behind_s, 0),
        write_behind_min_lag=int(_number(env, "WRITE_BEHIND_MIN_LAG", defaults.write_behind_min_lag, 0)),
        gc_full_interval_s=_number(env, "GC_FULL_INTERVAL", defaults.gc_full_interval_s, 0),
        huge_pages=_flag(env, "HUGE_PAGES", defaults.huge_pages),
        glibc_tunables=env.get("GLIBC_TUNABLES", defaults.glibc_tunables),
        identity=_identity_settings(env),
        security=_kafka_security(env),
        collector=_collector_settings(env),
        group=_group_settings(env),
    )
