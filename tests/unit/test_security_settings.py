"""Kafka security settings: parsing, the password's sources, what a repr shows, client options,
Faust credentials, refusals, and the local broker's SASL_SSL files."""

import ssl
import stat
from pathlib import Path

import faust
import pytest
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed

from streams.kafka_clients import client_options, faust_credentials, refusal, security_options
from streams.local_kafka import LocalKafkaConfig, render_properties
from streams.local_kafka_security import CLIENT_USER, MECHANISM, BrokerSecurity, make_certificates
from streams.settings import KafkaSecurity, SettingsError, settings_from_env

SECRET = "s3cret-Pa55word"


def sasl_env(**extra: str) -> dict[str, str]:
    return {"LEADSCORE_SECURITY_PROTOCOL": "SASL_SSL", "LEADSCORE_SASL_USERNAME": "svc", **extra}


def test_plaintext_is_the_default() -> None:
    security = settings_from_env({}).security
    assert security == KafkaSecurity()
    assert (security.protocol, security.sasl, security.tls) == ("PLAINTEXT", False, False)
    assert security_options(security) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(security) is None


def test_password_from_the_environment() -> None:
    security = settings_from_env(sasl_env(LEADSCORE_SASL_PASSWORD=SECRET)).security
    assert (security.protocol, security.sasl_mechanism, security.username) == ("SASL_SSL", "SCRAM-SHA-512", "svc")
    assert security.password == SECRET
    assert security.password_file is None


def test_password_from_a_file_loses_its_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text(SECRET + "\n")
    security = settings_from_env(sasl_env(LEADSCORE_SASL_PASSWORD_FILE=str(path))).security
    assert security.password == SECRET
    assert security.password_file == path


def test_password_from_both_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text(SECRET)
    env = sasl_env(LEADSCORE_SASL_PASSWORD=SECRET, LEADSCORE_SASL_PASSWORD_FILE=str(path))
    with pytest.raises(SettingsError, match="not both") as info:
        settings_from_env(env)
    assert SECRET not in str(info.value)


def test_missing_password_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nope"
    with pytest.raises(SettingsError, match=f"cannot read LEADSCORE_SASL_PASSWORD_FILE {path}: No such file"):
        settings_from_env(sasl_env(LEADSCORE_SASL_PASSWORD_FILE=str(path)))


def test_empty_password_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("\n")
    with pytest.raises(SettingsError, match="is empty"):
        settings_from_env(sasl_env(LEADSCORE_SASL_PASSWORD_FILE=str(path)))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LEADSCORE_SECURITY_PROTOCOL": "TLS"}, "must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL, got 'TLS'"),
        (sasl_env(LEADSCORE_SASL_PASSWORD=SECRET, LEADSCORE_SASL_MECHANISM="GSSAPI"), "SASL_MECHANISM must be one"),
        (
            {"LEADSCORE_SECURITY_PROTOCOL": "SASL_SSL", "LEADSCORE_SASL_PASSWORD": SECRET},
            "needs LEADSCORE_SASL_USERNAME",
        ),
        (sasl_env(), "needs LEADSCORE_SASL_PASSWORD or LEADSCORE_SASL_PASSWORD_FILE"),
        ({"LEADSCORE_SASL_USERNAME": "svc"}, "SASL_USERNAME is set but LEADSCORE_SECURITY_PROTOCOL is PLAINTEXT"),
        ({"LEADSCORE_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "LEADSCORE_SSL_CAFILE": "/x"}, "not SSL or SASL_SSL"),
        ({"LEADSCORE_SECURITY_PROTOCOL": "SSL", "LEADSCORE_SSL_CAFILE": "/no/such/ca.pem"}, "no such file"),
    ],
)
def test_bad_security_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message) as info:
        settings_from_env(env)
    assert SECRET not in str(info.value)


def test_keyfile_needs_certfile(tmp_path: Path) -> None:
    key = tmp_path / "client.key"
    key.write_text("x")
    with pytest.raises(SettingsError, match="SSL_KEYFILE needs LEADSCORE_SSL_CERTFILE"):
        settings_from_env({"LEADSCORE_SECURITY_PROTOCOL": "SSL", "LEADSCORE_SSL_KEYFILE": str(key)})


def test_protocol_and_mechanism_are_case_insensitive() -> None:
    env = sasl_env(LEADSCORE_SASL_PASSWORD=SECRET, LEADSCORE_SASL_MECHANISM="scram-sha-256")
    env["LEADSCORE_SECURITY_PROTOCOL"] = "sasl_plaintext"
    security = settings_from_env(env).security
    assert (security.protocol, security.sasl_mechanism, security.tls) == ("SASL_PLAINTEXT", "SCRAM-SHA-256", False)


def test_repr_never_shows_the_password(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text(SECRET)
    for env in (sasl_env(LEADSCORE_SASL_PASSWORD=SECRET), sasl_env(LEADSCORE_SASL_PASSWORD_FILE=str(path))):
        settings = settings_from_env(env)
        assert settings.security.password == SECRET
        for text in (repr(settings), str(settings), repr(settings.security), settings.security.describe()):
            assert SECRET not in text
        assert "svc" in repr(settings.security)
        assert SECRET not in repr(faust_credentials(settings.security))


@pytest.fixture(scope="module")
def broker_files(tmp_path_factory: pytest.TempPathFactory) -> BrokerSecurity:
    files = BrokerSecurity(tmp_path_factory.mktemp("broker") / "security")
    files.create("127.0.0.1", "127.0.0.1:19701")
    return files


def test_sasl_ssl_client_options(broker_files: BrokerSecurity) -> None:
    security = broker_files.client_security()
    settings = settings_from_env(
        {
            "LEADSCORE_BOOTSTRAP": "127.0.0.1:19701, 127.0.0.1:19702",
            "LEADSCORE_SECURITY_PROTOCOL": "SASL_SSL",
            "LEADSCORE_SASL_USERNAME": security.username,
            "LEADSCORE_SASL_PASSWORD_FILE": str(broker_files.client_password_file),
            "LEADSCORE_SSL_CAFILE": str(broker_files.ca_file),
        }
    )
    options = client_options(settings)
    assert options["bootstrap_servers"] == ["127.0.0.1:19701", "127.0.0.1:19702"]
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == (CLIENT_USER, security.password)
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("organizationName", "leadscore local"),), (("commonName", "leadscore local test CA"),))
    ]


def test_faust_credentials_per_protocol(broker_files: BrokerSecurity) -> None:
    sasl_ssl = faust_credentials(broker_files.client_security())
    assert isinstance(sasl_ssl, faust.SASLCredentials)
    assert (sasl_ssl.protocol.value, sasl_ssl.mechanism.value) == ("SASL_SSL", "SCRAM-SHA-512")
    assert isinstance(sasl_ssl.ssl_context, ssl.SSLContext)
    plain = faust_credentials(KafkaSecurity("SASL_PLAINTEXT", "SCRAM-SHA-256", "u", "p"))
    assert (plain.protocol.value, plain.mechanism.value, plain.ssl_context) == ("SASL_PLAINTEXT", "SCRAM-SHA-256", None)
    tls = faust_credentials(KafkaSecurity("SSL", cafile=broker_files.ca_file))
    assert isinstance(tls, faust.SSLCredentials)
    assert tls.protocol.value == "SSL"


def test_refusal_is_fatal_only_for_credentials_and_certificates() -> None:
    security = KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "svc", SECRET)
    refused = refusal(SaslAuthenticationFailed(), "h:1", security)
    assert refused is not None
    assert "refused SASL_SSL (SCRAM-SHA-512, user 'svc')" in str(refused)
    assert SECRET not in str(refused)
    unverified = ssl.SSLCertVerificationError(1, "certificate verify failed")
    unverified.verify_message = "unable to get local issuer certificate"
    assert "did not verify (unable to get local issuer certificate" in str(refusal(unverified, "h:1", security))
    assert refusal(KafkaConnectionError("closed"), "h:1", security) is None
    assert refusal(ConnectionRefusedError(), "h:1", security) is None


def test_broker_files_are_private(broker_files: BrokerSecurity) -> None:
    assert stat.S_IMODE(broker_files.directory.stat().st_mode) == 0o700
    for path in [*broker_files.files(), broker_files.client_env_file]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    admin, client = broker_files.secrets()
    assert admin != client
    assert len(client) >= 24
    env = broker_files.client_env_file.read_text()
    assert client not in env
    assert f"LEADSCORE_SASL_PASSWORD_FILE={broker_files.client_password_file}" in env
    assert f"LEADSCORE_SASL_MECHANISM={MECHANISM}" in env


def test_broker_certificate_is_for_the_host_and_signed_by_the_ca(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    ca_pem, broker_pem = make_certificates("10.1.2.3")
    ca = x509.load_pem_x509_certificate(ca_pem)
    cert = x509.load_pem_x509_certificate(broker_pem[broker_pem.index(b"-----BEGIN CERTIFICATE-----") :])
    assert b"PRIVATE KEY" not in ca_pem
    assert b"-----BEGIN PRIVATE KEY-----" in broker_pem
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "10.1.2.3"}
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    other_ca, _ = make_certificates("127.0.0.1")
    with pytest.raises(InvalidSignature):  # a CA of another broker (same name, other key)
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(other_ca))


def test_sasl_ssl_server_properties(tmp_path: Path, broker_files: BrokerSecurity) -> None:
    config = LocalKafkaConfig(port=19701, controller_port=19751, state_dir=tmp_path, sasl_ssl=True)
    text = render_properties(config, security=broker_files)
    assert "$" not in text.replace(broker_files.secrets()[0], "")
    props = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert props["listeners"] == "SASL_SSL://127.0.0.1:19701,CONTROLLER://127.0.0.1:19751"
    assert props["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT"
    assert props["inter.broker.listener.name"] == "SASL_SSL"
    assert props["sasl.enabled.mechanisms"] == props["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    assert props["ssl.keystore.location"] == str(broker_files.broker_pem)
    assert f'password="{broker_files.secrets()[0]}"' in props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]
    plain = render_properties(LocalKafkaConfig(port=19701, controller_port=19751, state_dir=tmp_path))
    assert "sasl" not in plain.lower().replace("sasl-ssl", "").replace("sasl_ssl", "")


def test_bench_hands_security_to_its_clients_and_workers_but_never_reports_it(tmp_path: Path) -> None:
    from streams.bench import BenchOptions, Run, settings_of
    from streams.kafka_clients import security_variables

    env = {**sasl_env(LEADSCORE_SASL_PASSWORD=SECRET), "LEADSCORE_TOPIC_PREFIX": "x.", "HOME": "/root"}
    security = security_variables(env)
    assert security == sasl_env(LEADSCORE_SASL_PASSWORD=SECRET)
    run = Run("s", "127.0.0.1:19701", tmp_path, security=security)
    worker_env = run.env("main")
    assert worker_env["LEADSCORE_SASL_PASSWORD"] == SECRET
    assert worker_env["LEADSCORE_TOPIC_PREFIX"] == "bench-s."
    assert client_options(settings_of(worker_env))["sasl_plain_username"] == "svc"
    options = BenchOptions(bootstrap=run.bootstrap, security=security)
    assert SECRET not in repr(options) + repr(run) + str(options.to_json())


def test_sasl_ssl_refuses_a_state_dir_formatted_without_its_users(tmp_path: Path) -> None:
    from streams.local_kafka import LocalKafka, LocalKafkaError

    kafka = LocalKafka(LocalKafkaConfig(port=19701, controller_port=19751, state_dir=tmp_path, sasl_ssl=True))
    with pytest.raises(LocalKafkaError, match="formatted without SASL_SSL users"):
        kafka._prepare_security(formatted=True)
    created = kafka._prepare_security(formatted=False)  # a new storage: the files are made for it
    assert created is not None
    assert created.exists()
    assert kafka.client_security().username == CLIENT_USER
    plain = LocalKafka(LocalKafkaConfig(port=19701, controller_port=19751, state_dir=tmp_path))
    assert plain._prepare_security(formatted=True) is None
    assert plain.client_security() == KafkaSecurity()
