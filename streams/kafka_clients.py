"""Every Kafka client's connection options, built from the settings' :class:`KafkaSecurity`:
aiokafka keyword arguments, Faust broker credentials, and a start-up check that turns refused
credentials or an untrusted certificate into one clear error instead of endless retries."""

import asyncio
import ssl
from collections.abc import Mapping
from typing import Any

from aiokafka.conn import create_conn  # type: ignore[import-untyped, unused-ignore]
from aiokafka.errors import (  # type: ignore[import-untyped, unused-ignore]
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    IllegalSaslStateError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context  # type: ignore[import-untyped, unused-ignore]
from aiokafka.protocol.metadata import MetadataRequest  # type: ignore[import-untyped, unused-ignore]

from streams.settings import PREFIX, KafkaSecurity, Settings, SettingsError

DEFAULT_KAFKA_PORT = 9092
_REFUSED = (
    SaslAuthenticationFailed,
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    UnsupportedSaslMechanismError,
    IllegalSaslStateError,
)


class KafkaAccessError(RuntimeError):
    """No broker could be used with these settings: it refused the credentials, its certificate did
    not verify, or none answered in time. The message never holds the password."""


class KafkaRefusedError(KafkaAccessError):
    """A broker answered and refused the credentials or its certificate did not verify: no retry
    can fix it (unlike a broker that is merely unreachable)."""


def ssl_context(security: KafkaSecurity) -> ssl.SSLContext | None:
    """The TLS context for SSL and SASL_SSL (hostname checked), else None."""
    if not security.tls:
        return None
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=security.cafile, certfile=security.certfile, keyfile=security.keyfile
        )
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(
            f"cannot load the TLS files ({PREFIX}SSL_CAFILE {security.cafile}, {PREFIX}SSL_CERTFILE "
            f"{security.certfile}, {PREFIX}SSL_KEYFILE {security.keyfile}): {exc}"
        ) from None
    return context


def security_options(security: KafkaSecurity) -> dict[str, Any]:
    """aiokafka keyword arguments for the security settings (any producer, consumer or admin client)."""
    options: dict[str, Any] = {"security_protocol": security.protocol}
    context = ssl_context(security)
    if context is not None:
        options["ssl_context"] = context
    if security.sasl:
        options |= {
            "sasl_mechanism": security.sasl_mechanism,
            "sasl_plain_username": security.username,
            "sasl_plain_password": security.password,
        }
    return options


SECURITY_VARIABLES = tuple(
    PREFIX + name
    for name in (
        "SECURITY_PROTOCOL",
        "SASL_MECHANISM",
        "SASL_USERNAME",
        "SASL_PASSWORD",
        "SASL_PASSWORD_FILE",
        "SSL_CAFILE",
        "SSL_CERTFILE",
        "SSL_KEYFILE",
    )
)


def security_variables(env: Mapping[str, str]) -> dict[str, str]:
    """The security variables set in ``env``: for a child process given only chosen settings."""
    return {name: env[name] for name in SECURITY_VARIABLES if env.get(name)}


def client_options(settings: Settings) -> dict[str, Any]:
    """``bootstrap_servers`` plus the security options: ``AIOKafkaProducer(**client_options(s), ...)``."""
    return {"bootstrap_servers": settings.bootstrap_servers, **security_options(settings.security)}


def faust_credentials(security: KafkaSecurity) -> Any:
    """Faust's ``broker_credentials`` for the security settings (None for PLAINTEXT)."""
    import faust

    if security.sasl:
        return faust.SASLCredentials(
            username=security.username,
            password=security.password,
            mechanism=security.sasl_mechanism,
            ssl_context=ssl_context(security),  # None for SASL_PLAINTEXT
        )
    if security.tls:
        return faust.SSLCredentials(ssl_context(security))
    return None


def _host_port(server: str) -> tuple[str, int]:
    host, _, port = server.strip().rpartition(":")
    if not host:
        return port, DEFAULT_KAFKA_PORT
    return host.strip("[]"), int(port)


def refusal(exc: BaseException, server: str, security: KafkaSecurity) -> KafkaRefusedError | None:
    """The clear error for a failure no retry can fix (refused credentials, unverified certificate),
    else None (the broker may just not be up yet)."""
    if isinstance(exc, _REFUSED):
        return KafkaRefusedError(
            f"the Kafka broker {server} refused {security.describe()}: {type(exc).__name__} "
            f"(check {PREFIX}SASL_USERNAME, the password, {PREFIX}SASL_MECHANISM and that the user exists)"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return KafkaRefusedError(
            f"the TLS certificate of the Kafka broker {server} did not verify ({exc.verify_message}; "
            f"{PREFIX}SSL_CAFILE is {security.cafile or 'unset: the system CAs'})"
        )
    return None


async def check_connection(settings: Settings, timeout_s: float = 60.0) -> None:
    """Connect to a bootstrap server with the settings' security and ask for metadata. Raises
    :class:`KafkaAccessError` at once when the broker refuses the credentials or its certificate;
    other failures (a broker still starting) are retried until ``timeout_s``."""
    security = settings.security
    options = security_options(security)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = "no attempt"
    while True:
        for server in settings.bootstrap_servers:
            host, port = _host_port(server)
            conn = None
            try:
                async with asyncio.timeout(max(1.0, min(15.0, deadline - loop.time()))):
                    conn = await create_conn(host, port, request_timeout_ms=15000, **options)
                    await conn.send(MetadataRequest([]))
                return
            except Exception as exc:  # classified: fatal ones raise, the rest are retried
                fatal = refusal(exc, server, security)
                if fatal is not None:
                    raise fatal from None
                last = f"{server}: {type(exc).__name__}: {exc}"
            finally:
                if conn is not None:
                    conn.close()
        if loop.time() >= deadline:
            hint = "" if security.protocol != "PLAINTEXT" else f" (does it need {PREFIX}SECURITY_PROTOCOL?)"
            raise KafkaAccessError(
                f"no Kafka broker of {settings.bootstrap} answered with {security.describe()} within "
                f"{timeout_s:g} s{hint}; last error: {last}"
            )
        await asyncio.sleep(1.0)
