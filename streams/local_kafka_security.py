"""SASL_SSL with SCRAM-SHA-512 for the local broker: a test CA and a broker certificate, the broker's
admin user and a client user with generated passwords, all kept under ``STATE_DIR/security`` with
owner-only permissions (0700 directory, 0600 files).

Kafka 4.1 reads PEM files directly (no Java keystore), and SCRAM users are created when the
storage is formatted (``kafka-storage format --add-scram``)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from streams.settings import KafkaSecurity

if TYPE_CHECKING:
    from cryptography import x509

MECHANISM = "SCRAM-SHA-512"
ADMIN_USER = "admin"  # the broker's own user (inter-broker listener)
CLIENT_USER = "leadscore"  # what workers, `send` and the other clients use
CERT_DAYS = 825
FILE_MODE = 0o600
DIR_MODE = 0o700


class BrokerSecurityError(Exception):
    """The security files are missing, unreadable or do not fit the broker's data."""


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file readable by its owner only (never briefly world-readable)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _name(common_name: str) -> x509.Name:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "leadscore local"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])  # fmt: skip


def make_certificates(host: str) -> tuple[bytes, bytes]:
    """A new test CA and a broker certificate for ``host`` (plus 127.0.0.1 and localhost), signed by
    it: (the CA certificate as PEM, the broker's PKCS#8 key followed by its certificate as PEM).
    The CA's key is not kept: nothing else is ever signed with it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = datetime.datetime.now(datetime.UTC)
    valid_from, valid_to = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=CERT_DAYS)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = _name("leadscore local test CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_to)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # key_cert_sign, crl_sign
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    try:
        address = x509.IPAddress(ipaddress.ip_address(host))
        if address not in names:
            names.append(address)
    except ValueError:
        if host != "localhost":
            names.append(x509.DNSName(host))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(host))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_to)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca_cert.public_bytes(pem), key_pem + cert.public_bytes(pem)


@dataclass(frozen=True)
class BrokerSecurity:
    """The security files of one local broker's state dir."""

    directory: Path

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def broker_pem(self) -> Path:
        return self.directory / "broker.pem"

    @property
    def admin_password_file(self) -> Path:
        return self.directory / "admin.password"

    @property
    def client_password_file(self) -> Path:
        return self.directory / "client.password"

    @property
    def client_env_file(self) -> Path:
        return self.directory / "client.env"

    def files(self) -> list[Path]:
        return [self.ca_file, self.broker_pem, self.admin_password_file, self.client_password_file]

    def exists(self) -> bool:
        return all(path.is_file() for path in self.files())

    def create(self, host: str, address: str) -> None:
        """Generate the CA, the broker certificate and both passwords (replacing any old ones)."""
        self.directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        self.directory.chmod(DIR_MODE)
        ca_pem, broker_pem = make_certificates(host)
        _write_private(self.ca_file, ca_pem)
        _write_private(self.broker_pem, broker_pem)
        for path in (self.admin_password_file, self.client_password_file):
            _write_private(path, secrets.token_urlsafe(24).encode() + b"\n")
        _write_private(self.client_env_file, self.client_env(address).encode())

    def password(self, path: Path) -> str:
        try:
            return path.read_text(encoding="ascii").strip()
        except OSError as exc:
            raise BrokerSecurityError(f"cannot read {path}: {exc.strerror}") from None

    def client_env(self, address: str) -> str:
        """``LEADSCORE_*`` lines that point a client at this broker as the client user (no password:
        it stays in its file)."""
        return (
            f"LEADSCORE_BOOTSTRAP={address}\n"
            "LEADSCORE_SECURITY_PROTOCOL=SASL_SSL\n"
            f"LEADSCORE_SASL_MECHANISM={MECHANISM}\n"
            f"LEADSCORE_SASL_USERNAME={CLIENT_USER}\n"
            f"LEADSCORE_SASL_PASSWORD_FILE={self.client_password_file}\n"
            f"LEADSCORE_SSL_CAFILE={self.ca_file}\n"
        )

    def client_security(self) -> KafkaSecurity:
        """The client user's :class:`KafkaSecurity`."""
        return KafkaSecurity(
            protocol="SASL_SSL",
            sasl_mechanism=MECHANISM,
            username=CLIENT_USER,
            password=self.password(self.client_password_file),
            password_file=self.client_password_file,
            cafile=self.ca_file,
        )

    def scram_arguments(self) -> list[str]:
        """``kafka-storage format`` arguments that create both SCRAM users."""
        arguments = []
        for user, path in ((ADMIN_USER, self.admin_password_file), (CLIENT_USER, self.client_password_file)):
            arguments += ["--add-scram", f"{MECHANISM}=[name={user},password={self.password(path)}]"]
        return arguments

    def secrets(self) -> list[str]:
        """Both passwords, to redact them from any output shown."""
        return [self.password(self.admin_password_file), self.password(self.client_password_file)]

    def properties(self) -> str:
        """The broker's SASL_SSL settings (appended to server.properties, which is then 0600)."""
        admin = self.password(self.admin_password_file)
        login = "org.apache.kafka.common.security.scram.ScramLoginModule"
        jaas = f'{login} required username="{ADMIN_USER}" password="{admin}";'
        return (
            "\n# SASL_SSL with SCRAM-SHA-512 (streams/local_kafka_security.py)\n"
            f"sasl.enabled.mechanisms={MECHANISM}\n"
            f"sasl.mechanism.inter.broker.protocol={MECHANISM}\n"
            f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={jaas}\n"
            "ssl.keystore.type=PEM\n"
            f"ssl.keystore.location={self.broker_pem}\n"
            "ssl.truststore.type=PEM\n"
            f"ssl.truststore.location={self.ca_file}\n"
            "ssl.client.auth=none\n"
        )
