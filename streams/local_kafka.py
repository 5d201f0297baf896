"""A local Apache Kafka broker without Docker: jars from Maven Central, one KRaft JVM.

The Kafka version is pinned once, as the ``kafka.version`` property of
``deploy/kafka/pom.xml``; :func:`pinned_version` reads it and Maven gets
``-Dkafka.version=...`` so another version can be asked for explicitly.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from string import Template

import click
from aiokafka.client import (  # type: ignore[import-untyped, unused-ignore]
    AIOKafkaClient,
    CoordinationType,
)

from streams.kafka_clients import security_options
from streams.local_kafka_security import BrokerSecurity, BrokerSecurityError
from streams.settings import KafkaSecurity

DEPLOY_DIR = Path(__file__).resolve().parents[1] / "deploy" / "kafka"
POM_FILE = DEPLOY_DIR / "pom.xml"
LOG4J2_CONFIG = DEPLOY_DIR / "log4j2.yaml"
PROPERTIES_TEMPLATE = DEPLOY_DIR / "server.properties.template"
MIN_JAVA = 17
DEFAULT_PORT = 9092
CONTROLLER_PORT_OFFSET = 10000
NODE_ID = 1

_JAVA_HINT = "install a JDK 17 or newer (e.g. `apt-get install openjdk-17-jre-headless`) or set JAVA_HOME"
_MAVEN_HINT = "install Maven 3.8+ (e.g. `apt-get install maven`)"


class LocalKafkaError(Exception):
    """The local broker could not be installed, started or stopped."""


def pinned_version(pom: Path = POM_FILE) -> str:
    """The Kafka version pinned as ``<kafka.version>`` in the pom."""
    try:
        text = pom.read_text(encoding="utf-8")
    except OSError as exc:
        raise LocalKafkaError(f"cannot read the Kafka pom {pom}: {exc}") from exc
    match = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", text)
    if match is None:
        raise LocalKafkaError(f"no <kafka.version> property in {pom}")
    return match.group(1)


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/leadscore``, or ``~/.cache/leadscore``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "leadscore"


def default_controller_port(port: int) -> int:
    """``port + 10000`` when that is a valid port, else ``port - 10000``."""
    above = port + CONTROLLER_PORT_OFFSET
    return above if above <= 65535 else port - CONTROLLER_PORT_OFFSET


@dataclass(frozen=True, init=False)
class LocalKafkaConfig:
    """Where and how the local broker runs; unset paths default under :func:`cache_root`."""

    version: str
    host: str
    port: int
    controller_port: int
    cache_dir: Path
    state_dir: Path
    heap: str
    start_timeout_s: float
    sasl_ssl: bool  # the client listener is SASL_SSL with SCRAM-SHA-512 (streams/local_kafka_security.py)

    def __init__(
        self,
        version: str | None = None,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        controller_port: int | None = None,
        cache_dir: Path | None = None,
        state_dir: Path | None = None,
        heap: str = "1g",
        start_timeout_s: float = 90.0,
        sasl_ssl: bool = False,
    ) -> None:
        version = version or pinned_version()
        controller_port = controller_port or default_controller_port(port)
        for label, number in (("port", port), ("controller_port", controller_port)):
            if not 0 < number < 65536:
                raise LocalKafkaError(f"{label} {number} is not a TCP port")
        if port == controller_port:
            raise LocalKafkaError(f"port and controller_port are both {port}")
        values = {
            "version": version,
            "host": host,
            "port": port,
            "controller_port": controller_port,
            "cache_dir": (cache_dir or cache_root() / f"kafka-{version}").expanduser().absolute(),
            "state_dir": (state_dir or cache_root() / f"broker-{port}").expanduser().absolute(),
            "heap": heap,
            "start_timeout_s": start_timeout_s,
            "sasl_ssl": sasl_ssl,
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def listener(self) -> str:
        """The client listener's security protocol."""
        return "SASL_SSL" if self.sasl_ssl else "PLAINTEXT"


@dataclass(frozen=True)
class Status:
    """What :meth:`LocalKafka.status` found."""

    running: bool
    version: str
    address: str
    pid: int | None
    log_file: Path

    def describe(self) -> str:
        if self.running:
            return f"Apache Kafka {self.version} is running on {self.address} (pid {self.pid}, log {self.log_file})"
        return f"Apache Kafka is not running on {self.address} (log {self.log_file})"


@dataclass(frozen=True)
class StartResult:
    """What :meth:`LocalKafka.start` did."""

    already_running: bool
    version: str
    address: str
    pid: int
    log_file: Path
    elapsed_s: float
    client_env: Path | None = None  # SASL_SSL: the LEADSCORE_* settings of its client user

    def describe(self) -> str:
        verb = "was already running" if self.already_running else "is running"
        took = "" if self.already_running else f", ready in {self.elapsed_s:.1f} s"
        text = f"Apache Kafka {self.version} {verb} on {self.address} (pid {self.pid}, log {self.log_file}{took})"
        if self.client_env is not None:
            text += f"\nSASL_SSL (SCRAM-SHA-512); clients: set -a; . {self.client_env}; set +a"
        return text


def parse_java_version(text: str) -> int:
    """The major version in ``java -version`` output (``1.8.0_351`` is 8)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if match is None:
        raise LocalKafkaError(f"cannot read the Java version from: {text.strip()[:200]!r}")
    major = int(match.group(1))
    if major == 1 and match.group(2) is not None:
        return int(match.group(2))
    return major


def find_java() -> str:
    """``$JAVA_HOME/bin/java`` or ``java`` on PATH, checked to be Java 17+."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    java = str(candidate) if candidate and candidate.is_file() else shutil.which("java")
    if java is None:
        raise LocalKafkaError(f"the local Kafka broker needs Java {MIN_JAVA}+, but no `java` was found: {_JAVA_HINT}")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    major = parse_java_version(out.stderr + out.stdout)
    if major < MIN_JAVA:
        raise LocalKafkaError(
            f"the local Kafka broker needs Java {MIN_JAVA}+, but {java} is Java {major}: {_JAVA_HINT}"
        )
    return java


def find_maven() -> str:
    """``mvn`` on PATH."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalKafkaError(
            f"resolving the Kafka jars needs Maven (and Java {MIN_JAVA}+), but no `mvn` was found: {_MAVEN_HINT}"
        )
    return mvn


def render_properties(
    config: LocalKafkaConfig, template: Path = PROPERTIES_TEMPLATE, security: BrokerSecurity | None = None
) -> str:
    """``server.properties`` for a single KRaft broker+controller node (with ``security``'s SASL_SSL
    settings appended when the config asks for SASL_SSL)."""
    text = Template(template.read_text(encoding="utf-8")).substitute(
        node_id=NODE_ID,
        host=config.host,
        port=config.port,
        controller_port=config.controller_port,
        log_dirs=config.state_dir / "data",
        listener=config.listener,
    )
    if config.sasl_ssl:
        if security is None:
            raise LocalKafkaError("a SASL_SSL broker needs its security files")
        text += security.properties()
    return text


def new_cluster_id() -> str:
    """A random Kafka cluster id, as ``kafka-storage random-uuid`` prints it."""
    while True:
        cluster_id = base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a text file, or a note that it is missing."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return f"({path} does not exist)"
    return "\n".join(data.splitlines()[-lines:])


def port_in_use(host: str, port: int) -> bool:
    """Whether something already listens on (or holds) ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


async def probe(bootstrap: str, timeout_s: float, security: KafkaSecurity | None = None) -> None:
    """Raise unless the broker returns metadata and a group coordinator."""
    options = security_options(security or KafkaSecurity())
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000), **options)
    try:
        async with asyncio.timeout(timeout_s):
            await client.bootstrap()
            metadata = await client.fetch_all_metadata()
            if not metadata.brokers():
                raise LocalKafkaError("metadata lists no brokers yet")
            # Creates the offsets topic, so the first group join does not have to wait.
            await client.coordinator_lookup(CoordinationType.GROUP, "leadscore-readiness")
    finally:
        await client.close()


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


class LocalKafka:
    """Installs, starts, checks and stops one local broker described by a config."""

    def __init__(self, config: LocalKafkaConfig | None = None) -> None:
        self.config = config or LocalKafkaConfig()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def libs_dir(self) -> Path:
        return self.config.cache_dir / "libs"

    @property
    def log_file(self) -> Path:
        return self.config.state_dir / "kafka.log"

    @property
    def pid_file(self) -> Path:
        return self.config.state_dir / "kafka.pid"

    @property
    def info_file(self) -> Path:
        return self.config.state_dir / "broker.json"

    @property
    def properties_file(self) -> Path:
        return self.config.state_dir / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.config.state_dir / "data"

    @property
    def security(self) -> BrokerSecurity:
        """The SASL_SSL files (CA, broker certificate, passwords) of this state dir."""
        return BrokerSecurity(self.config.state_dir / "security")

    def client_security(self) -> KafkaSecurity:
        """How a client connects to this broker: PLAINTEXT, or SASL_SSL as the client user."""
        return self.security.client_security() if self.config.sasl_ssl else KafkaSecurity()

    def is_installed(self) -> bool:
        return (self.libs_dir / f"kafka_2.13-{self.config.version}.jar").is_file()

    def ensure_installed(self) -> Path:
        """Resolve the broker's jars into ``cache_dir/libs`` once; return that directory."""
        if self.is_installed():
            return self.libs_dir
        find_java()
        mvn = find_maven()
        self.config.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".libs-", dir=self.config.cache_dir))
        try:
            shutil.copyfile(POM_FILE, tmp / "pom.xml")
            cmd = [
                mvn, "-B", "-q", "--no-transfer-progress", "-Dstyle.color=never",
                "-f", str(tmp / "pom.xml"), "dependency:copy-dependencies",
                "-DincludeScope=runtime", f"-DoutputDirectory={tmp / 'libs'}",
                f"-Dkafka.version={self.config.version}",
            ]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0 or not (tmp / "libs").is_dir():
                output = "\n".join((out.stdout + out.stderr).strip().splitlines()[-20:])
                raise LocalKafkaError(
                    f"Maven could not resolve Apache Kafka {self.config.version} (exit {out.returncode}):\n{output}"
                )
            try:
                (tmp / "libs").rename(self.libs_dir)
            except OSError:
                if not self.is_installed():  # Not a concurrent install that won the race.
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if not self.is_installed():
            raise LocalKafkaError(f"{self.libs_dir} has no kafka_2.13-{self.config.version}.jar")
        return self.libs_dir

    def recorded_pid(self) -> int | None:
        """The PID in the pid file, if the file holds one."""
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def is_our_broker(self, pid: int) -> bool:
        """Whether ``pid`` is a live ``kafka.Kafka`` JVM on this state dir's properties."""
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None  # Our child: also reaps it once it exits.
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return b"kafka.Kafka" in args and str(self.properties_file).encode() in args

    def status(self) -> Status:
        """Whether the recorded broker is running, without contacting it."""
        pid = self.recorded_pid()
        running = pid is not None and self.is_our_broker(pid)
        version = self.config.version
        if running:
            with contextlib.suppress(OSError, ValueError, KeyError):
                version = str(json.loads(self.info_file.read_text())["version"])
        return Status(
            running=running,
            version=version,
            address=self.config.address,
            pid=pid if running else None,
            log_file=self.log_file,
        )

    def start(self) -> StartResult:
        """Start the broker unless it already runs, and wait until it answers clients."""
        begin = time.monotonic()
        with self._locked():
            current = self.status()
            if current.running and current.pid is not None:
                self._check_listener()
                self._wait_ready(current.pid, time.monotonic())
                return StartResult(
                    already_running=True,
                    version=current.version,
                    address=current.address,
                    pid=current.pid,
                    log_file=self.log_file,
                    elapsed_s=time.monotonic() - begin,
                    client_env=self._client_env(),
                )
            self.pid_file.unlink(missing_ok=True)
            java = find_java()
            self.ensure_installed()
            for port in (self.config.port, self.config.controller_port):
                if port_in_use(self.config.host, port):
                    raise LocalKafkaError(
                        f"port {port} on {self.config.host} is already in use by another "
                        f"process, not by the broker recorded in {self.config.state_dir}; stop "
                        "it or choose another port (--port or LEADSCORE_KAFKA_PORT)"
                    )
            formatted = (self.data_dir / "meta.properties").is_file()
            security = self._prepare_security(formatted)
            # 0600: with SASL_SSL it holds the broker's own password.
            self.properties_file.unlink(missing_ok=True)
            fd = os.open(self.properties_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(render_properties(self.config, security=security))
            if not formatted:
                self._format(java, security)
            pid = self._spawn(java)
            self._wait_ready(pid, time.monotonic())
            return StartResult(
                already_running=False,
                version=self.config.version,
                address=self.config.address,
                pid=pid,
                log_file=self.log_file,
                elapsed_s=time.monotonic() - begin,
                client_env=self._client_env(),
            )

    def _client_env(self) -> Path | None:
        return self.security.client_env_file if self.config.sasl_ssl else None

    def _prepare_security(self, formatted: bool) -> BrokerSecurity | None:
        """SASL_SSL: the security files, created with the storage (SCRAM users exist only from format)."""
        if not self.config.sasl_ssl:
            return None
        security = self.security
        if not formatted:
            security.create(self.config.host, self.config.address)
        elif not security.exists():
            raise LocalKafkaError(
                f"{self.data_dir} was formatted without SASL_SSL users (no {security.directory}); "
                "start it without --sasl-ssl, or use another --state-dir"
            )
        try:
            security.secrets()  # readable now, so later reads do not fail half-way through start-up
        except BrokerSecurityError as exc:
            raise LocalKafkaError(str(exc)) from None
        return security

    def _check_listener(self) -> None:
        """Refuse to report a running broker whose client listener is not the one asked for."""
        try:
            running = str(json.loads(self.info_file.read_text()).get("listener", "PLAINTEXT"))
        except (OSError, ValueError):
            return
        if running != self.config.listener:
            raise LocalKafkaError(
                f"the broker on {self.config.address} runs a {running} listener, not {self.config.listener}; "
                "stop it first or use another --port and --state-dir"
            )

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the recorded broker (SIGTERM, then SIGKILL); return whether one was running."""
        with self._locked():
            return self._stop(timeout_s)

    def _stop(self, timeout_s: float) -> bool:
        pid = self.recorded_pid()
        stopped = pid is not None and self.is_our_broker(pid)
        if pid is not None and stopped:
            os.kill(pid, signal.SIGTERM)
            if not self._wait_exit(pid, timeout_s):
                os.kill(pid, signal.SIGKILL)
                self._wait_exit(pid, 10.0)
        self.pid_file.unlink(missing_ok=True)
        return stopped

    def _java_cmd(self, java: str, main: str, *args: str) -> list[str]:
        return [
            java,
            f"-Xmx{self.config.heap}",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
            "-cp",
            str(self.libs_dir / "*"),
            main,
            *args,
        ]

    def _format(self, java: str, security: BrokerSecurity | None = None) -> None:
        scram = security.scram_arguments() if security is not None else []
        cmd = self._java_cmd(
            java,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            new_cluster_id(),
            "-c",
            str(self.properties_file),
            *scram,
        )
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            output = (out.stdout + out.stderr).strip()
            for secret in security.secrets() if security is not None else []:
                output = output.replace(secret, "***")
            raise LocalKafkaError(f"formatting {self.data_dir} failed (exit {out.returncode}):\n{output}")

    def _spawn(self, java: str) -> int:
        cmd = self._java_cmd(java, "kafka.Kafka", str(self.properties_file))
        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.config.state_dir,
                start_new_session=True,
            )
        pid = self._proc.pid
        self.pid_file.write_text(f"{pid}\n")
        info = {
            "version": self.config.version,
            "address": self.config.address,
            "controller_port": self.config.controller_port,
            "listener": self.config.listener,
            "pid": pid,
            "started_at": time.time(),
        }
        self.info_file.write_text(json.dumps(info, indent=2) + "\n")
        return pid

    def _wait_ready(self, pid: int, since: float) -> None:
        deadline = since + self.config.start_timeout_s
        last_error = "no answer yet"
        while True:
            if not self.is_our_broker(pid):
                code = self._proc.poll() if self._proc is not None else None
                how = f"exited with code {code}" if code is not None else "exited"
                raise LocalKafkaError(
                    f"Apache Kafka (pid {pid}) {how} during start-up; "
                    f"last lines of {self.log_file}:\n{tail(self.log_file)}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if self._accepts(min(remaining, 1.0)):
                try:
                    with _quiet("aiokafka"):
                        asyncio.run(probe(self.config.address, min(remaining, 10.0), self.client_security()))
                    return
                except Exception as exc:  # Any failure means: not ready yet.
                    last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        spawned = self._proc is not None and self._proc.pid == pid
        if spawned:
            self._stop(30.0)
        raise LocalKafkaError(
            f"Apache Kafka on {self.config.address} did not answer within "
            f"{self.config.start_timeout_s:g} s ({last_error})"
            f"{'; it was stopped' if spawned else ''}. "
            f"Last lines of {self.log_file}:\n{tail(self.log_file)}"
        )

    def _accepts(self, timeout_s: float) -> bool:
        try:
            with socket.create_connection((self.config.host, self.config.port), timeout_s):
                return True
        except OSError:
            return False

    def _wait_exit(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.is_our_broker(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)
        return True

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.config.state_dir / "kafka.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


_port_option = click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    envvar="LEADSCORE_KAFKA_PORT",
    help="Client port on 127.0.0.1 (env LEADSCORE_KAFKA_PORT).",
)
_state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar="LEADSCORE_KAFKA_STATE_DIR",
    help="Data, log and pid directory [default: ~/.cache/leadscore/broker-PORT].",
)


def _broker(port: int, state_dir: Path | None, timeout: float = 90.0, sasl_ssl: bool = False) -> LocalKafka:
    try:
        return LocalKafka(LocalKafkaConfig(port=port, state_dir=state_dir, start_timeout_s=timeout, sasl_ssl=sasl_ssl))
    except LocalKafkaError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group(name="kafka")
def kafka_cli() -> None:
    """A local Apache Kafka broker without Docker (needs Java 17+ and Maven)."""


@kafka_cli.command()
@_port_option
@_state_dir_option
@click.option("--timeout", type=float, default=90.0, show_default=True, help="Seconds to wait.")
@click.option(
    "--sasl-ssl",
    is_flag=True,
    help="Client listener SASL_SSL with SCRAM-SHA-512: a test CA, a broker certificate and the users "
    "'admin' and 'leadscore' are created in STATE_DIR/security (0600) when the storage is first formatted.",
)
def start(port: int, state_dir: Path | None, timeout: float, sasl_ssl: bool) -> None:
    """Start the broker (resolving its jars on first use) and wait until it answers."""
    try:
        click.echo(_broker(port, state_dir, timeout, sasl_ssl).start().describe())
    except LocalKafkaError as exc:
        raise click.ClickException(str(exc)) from exc


@kafka_cli.command()
@_port_option
@_state_dir_option
def stop(port: int, state_dir: Path | None) -> None:
    """Stop the broker this tool started on that port."""
    kafka = _broker(port, state_dir)
    pid = kafka.status().pid
    try:
        stopped = kafka.stop()
    except LocalKafkaError as exc:
        raise click.ClickException(str(exc)) from exc
    if stopped:
        click.echo(f"Stopped Apache Kafka on {kafka.config.address} (pid {pid}).")
    else:
        click.echo(f"Apache Kafka was not running on {kafka.config.address}; nothing to stop.")


@kafka_cli.command()
@_port_option
@_state_dir_option
def status(port: int, state_dir: Path | None) -> None:
    """Print whether the broker runs; exit 0 when it does, 3 when not."""
    result = _broker(port, state_dir).status()
    click.echo(result.describe())
    if not result.running:
        raise click.exceptions.Exit(3)
