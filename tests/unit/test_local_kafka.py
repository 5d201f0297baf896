"""Pure parts of the local Kafka manager: no JVM, no Maven download."""

from __future__ import annotations

import base64
import socket
import stat
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from streams.local_kafka import (
    LocalKafka,
    LocalKafkaConfig,
    LocalKafkaError,
    StartResult,
    find_java,
    find_maven,
    kafka_cli,
    new_cluster_id,
    parse_java_version,
    pinned_version,
    port_in_use,
    render_properties,
    tail,
)

pytestmark = pytest.mark.unit


def _script(directory: Path, name: str, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment', 17),
        ('java version "1.8.0_351"\nJava(TM) SE Runtime Environment', 8),
        ('openjdk version "21" 2023-09-19\nOpenJDK 64-Bit Server VM', 21),
        ('openjdk version "11.0.2" 2019-01-15', 11),
    ],
)
def test_parse_java_version(output: str, major: int) -> None:
    assert parse_java_version(output) == major


def test_parse_java_version_rejects_garbage() -> None:
    with pytest.raises(LocalKafkaError, match="cannot read the Java version"):
        parse_java_version("command not found")


def test_missing_java_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr("shutil.which", lambda _name: None)
    with pytest.raises(LocalKafkaError, match=r"needs Java 17\+.*no `java` was found.*install"):
        find_java()


def test_old_java_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _script(tmp_path / "bin", "java", """echo 'java version "1.8.0_351"' >&2""")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(LocalKafkaError, match=r"needs Java 17\+, but .* is Java 8: install"):
        find_java()


def test_java_home_wins_over_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    java = _script(tmp_path / "jdk" / "bin", "java", """echo 'openjdk version "21" x' >&2""")
    _script(tmp_path / "bin", "java", """echo 'java version "1.8.0_351"' >&2""")
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert find_java() == str(java)


def test_missing_maven_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda _name: None)
    with pytest.raises(LocalKafkaError, match="no `mvn` was found: install Maven"):
        find_maven()


def test_pinned_version_is_the_pom_property(tmp_path: Path) -> None:
    pom = tmp_path / "pom.xml"
    pom.write_text("<project><properties><kafka.version>9.8.7</kafka.version></properties>")
    assert pinned_version(pom) == "9.8.7"
    pom.write_text("<project/>")
    with pytest.raises(LocalKafkaError, match=r"no <kafka\.version>"):
        pinned_version(pom)


def test_repo_pom_pins_kafka_4_1_1() -> None:
    assert pinned_version() == "4.1.1"
    assert LocalKafkaConfig().version == "4.1.1"


def test_config_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    config = LocalKafkaConfig()
    assert (config.host, config.port, config.controller_port) == ("127.0.0.1", 9092, 19092)
    assert config.cache_dir == tmp_path / "leadscore" / "kafka-4.1.1"
    assert config.state_dir == tmp_path / "leadscore" / "broker-9092"
    assert (config.heap, config.start_timeout_s) == ("1g", 90.0)
    assert config.address == "127.0.0.1:9092"


def test_config_without_xdg_uses_home_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    config = LocalKafkaConfig(version="4.0.0", port=29092)
    assert config.cache_dir == tmp_path / ".cache" / "leadscore" / "kafka-4.0.0"
    assert config.state_dir == tmp_path / ".cache" / "leadscore" / "broker-29092"


def test_controller_port_stays_a_valid_port() -> None:
    assert LocalKafkaConfig(port=60000).controller_port == 50000
    assert LocalKafkaConfig(port=9092, controller_port=9093).controller_port == 9093


@pytest.mark.parametrize(
    ("port", "controller_port", "message"),
    [(9092, 9092, "both 9092"), (70000, None, "port 70000 is not a TCP port")],
)
def test_config_rejects_bad_ports(port: int, controller_port: int | None, message: str) -> None:
    with pytest.raises(LocalKafkaError, match=message):
        LocalKafkaConfig(port=port, controller_port=controller_port)


def test_render_properties(tmp_path: Path) -> None:
    config = LocalKafkaConfig(port=29092, controller_port=29093, state_dir=tmp_path)
    text = render_properties(config)
    assert "$" not in text
    props = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:29093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29092"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_new_cluster_id_looks_like_kafka_uuid() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cluster_id in ids:
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_tail(tmp_path: Path) -> None:
    log = tmp_path / "kafka.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert tail(log, 3) == "line 97\nline 98\nline 99"
    assert "does not exist" in tail(tmp_path / "missing.log")


def test_port_in_use() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
    assert not port_in_use("127.0.0.1", port)


def test_ensure_installed_is_a_noop_when_jars_are_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kafka = LocalKafka(LocalKafkaConfig(cache_dir=tmp_path))
    (tmp_path / "libs").mkdir()
    (tmp_path / "libs" / "kafka_2.13-4.1.1.jar").touch()
    monkeypatch.setattr("shutil.which", lambda _name: None)
    assert kafka.ensure_installed() == tmp_path / "libs"


def test_failed_maven_leaves_no_partial_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _script(tmp_path / "bin", "java", """echo 'openjdk version "17.0.15" x' >&2""")
    _script(tmp_path / "bin", "mvn", "echo 'Could not resolve dependencies'; exit 1")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    cache = tmp_path / "cache"
    kafka = LocalKafka(LocalKafkaConfig(cache_dir=cache))
    with pytest.raises(LocalKafkaError, match=r"(?s)exit 1.*Could not resolve dependencies"):
        kafka.ensure_installed()
    assert list(cache.iterdir()) == []


def test_stop_leaves_a_foreign_pid_alone(tmp_path: Path) -> None:
    kafka = LocalKafka(LocalKafkaConfig(port=29092, state_dir=tmp_path))
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        kafka.pid_file.write_text(f"{sleeper.pid}\n")
        assert not kafka.status().running
        assert kafka.stop() is False
        assert sleeper.poll() is None
        assert not kafka.pid_file.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_status_of_a_broker_never_started(tmp_path: Path) -> None:
    status = LocalKafka(LocalKafkaConfig(port=29092, state_dir=tmp_path)).status()
    assert (status.running, status.pid, status.address) == (False, None, "127.0.0.1:29092")
    assert status.log_file == tmp_path / "kafka.log"
    assert status.describe().startswith("Apache Kafka is not running on 127.0.0.1:29092")


def test_start_result_describe() -> None:
    result = StartResult(True, "4.1.1", "127.0.0.1:9092", 42, Path("/x/kafka.log"), 0.1)
    assert result.describe() == ("Apache Kafka 4.1.1 was already running on 127.0.0.1:9092 (pid 42, log /x/kafka.log)")


def test_cli_status_exits_3_and_honours_port_env(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        kafka_cli,
        ["status", "--state-dir", str(tmp_path)],
        env={"LEADSCORE_KAFKA_PORT": "29555"},
    )
    assert result.exit_code == 3, result.output
    assert "not running on 127.0.0.1:29555" in result.output


def test_cli_reports_errors_with_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr("shutil.which", lambda _name: None)
    result = CliRunner().invoke(kafka_cli, ["start", "--port", "29556", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "needs Java 17+" in result.output
