"""SASL_SSL with SCRAM-SHA-512 on a real broker of the test's own (``LocalKafka(sasl_ssl=True)``):
a worker scores over it with its password from the environment or from a file; a wrong password
stops the worker and ``leadscore send`` at once with a clear message; PLAINTEXT and an untrusted
CA are refused; and no log holds a password, a SCRAM secret or an e-mail address of the input."""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from streams.kafka_clients import KafkaAccessError, check_connection, client_options
from streams.local_kafka import LocalKafka
from streams.local_kafka_security import ADMIN_USER, CLIENT_USER, make_certificates
from streams.settings import Settings, settings_from_env
from tests.integration.kafka import journey
from tests.integration.worker import ROOT, WorkerProcess
from tests.reliability.harness import Figures, own_broker, record_figures

pytestmark = pytest.mark.skipif(
    shutil.which("java") is None or shutil.which("mvn") is None, reason="needs Java 17+ and Maven"
)

EMAIL = "jane.doe@example.com"  # in a profile that is scored
BAD_EMAIL = "john.roe@example.org"  # in a profile that is dead-lettered
LOGS: list[Path] = []  # every log the module captured, scanned by the last test
SECRETS: list[str] = []  # wrong passwords tried, scanned for too
FIGURES = {"faults": 0, "sent": 0, "scored": 0, "dead_lettered": 0, "mql": 0}  # for record_figures


kafka = own_broker("kafka", range(19700, 19750), sasl_ssl=True)  # SASL_SSL, its controller 50 ports above


def client_env(kafka: LocalKafka, password: str | None = None, password_file: Path | None = None) -> dict[str, str]:
    """LEADSCORE_* of a SASL_SSL client: the password from the variable or from the file."""
    files = kafka.security
    return {
        "LEADSCORE_BOOTSTRAP": kafka.config.address,
        "LEADSCORE_SECURITY_PROTOCOL": "SASL_SSL",
        "LEADSCORE_SASL_MECHANISM": "SCRAM-SHA-512",
        "LEADSCORE_SASL_USERNAME": CLIENT_USER,
        "LEADSCORE_SASL_PASSWORD": password or "",
        "LEADSCORE_SASL_PASSWORD_FILE": str(password_file or ""),
        "LEADSCORE_SSL_CAFILE": str(files.ca_file),
    }


def worker_env(names: str, data_dir: Path) -> dict[str, str]:
    return {
        "LEADSCORE_TOPIC_PREFIX": names,
        "LEADSCORE_APP_ID": names.rstrip(".") + "-app",
        "LEADSCORE_PARTITIONS": "4",
        "LEADSCORE_DATA_DIR": str(data_dir),
        "LEADSCORE_TICK_INTERVAL": "0.2",
    }


async def produce(settings: Settings, messages: list[tuple[str, bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(**client_options(settings), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for topic, key, value in messages:
            await producer.send(topic, key=key, value=value)
        await producer.flush()
    finally:
        await producer.stop()


async def read(settings: Settings, topics: list[str], wanted: int, timeout_s: float = 120.0) -> list[Any]:
    """Records of the topics from the beginning, until ``wanted`` were read or the timeout passed."""
    consumer = AIOKafkaConsumer(
        *topics, **client_options(settings), auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < wanted and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


def scored_journey(names: str, lead: str) -> list[tuple[str, bytes, bytes]]:
    """A qualifying journey whose profile names an e-mail address, and a broken profile with another."""
    now = int(time.time() * 1000)
    messages = [(topic, key or b"", value or b"") for topic, key, value in journey(names, lead, now)]
    profile = {"event_id": f"{lead}-mail", "lead_id": lead, "occurred_at": now + 100, "email": EMAIL}
    broken = {"event_id": f"{lead}-bad", "lead_id": lead, "occurred_at": "yesterday", "email": BAD_EMAIL}
    topic = names + "lead-profiles"
    return [*messages, (topic, lead.encode(), orjson.dumps(profile)), (topic, lead.encode(), orjson.dumps(broken))]


@pytest.mark.parametrize("source", ["env", "file"])
def test_worker_scores_over_sasl_ssl(kafka: LocalKafka, tmp_path: Path, source: str) -> None:
    password = kafka.security.client_security().password
    if source == "file":
        path = tmp_path / "kafka.password"
        path.write_text(password + "\n")
        path.chmod(0o600)
        security = client_env(kafka, password_file=path)
    else:
        security = client_env(kafka, password=password)
    names = f"sec-{source}-{os.urandom(4).hex()}."
    env = {**security, **worker_env(names, tmp_path / "data")}
    settings = settings_from_env(env)
    assert settings.security.password == password
    worker = WorkerProcess(env=env, log_path=tmp_path / f"worker-{source}.log")
    LOGS.append(worker.log_path)
    worker.start(ready_timeout_s=180)
    try:
        lead = f"lead-{source}"
        messages = scored_journey(names, lead)
        asyncio.run(produce(settings, messages))
        dead = asyncio.run(read(settings, [names + "lead-dead-letters"], 1))
        deadline = time.monotonic() + 120
        while worker.metric("leadscore_events_scored_total") < len(messages) - 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        scored = int(worker.metric("leadscore_events_scored_total"))
        mql = asyncio.run(read(settings, [names + "mql-handoff"], 2, timeout_s=5))  # one, and no second
    finally:
        assert worker.stop() == 0, worker.log()
    assert scored == len(messages) - 1  # the journey and the profile with an e-mail address
    assert [json.loads(r.value)["lead_id"] for r in mql] == [lead]
    assert json.loads(mql[0].value)["score"] >= 75
    assert len(dead) == 1
    assert "occurred_at" in dead[0].value.decode()
    for key, value in (("sent", len(messages)), ("scored", scored), ("dead_lettered", len(dead)), ("mql", len(mql))):
        FIGURES[key] += value


def test_wrong_password_stops_the_worker_at_once(kafka: LocalKafka, tmp_path: Path) -> None:
    wrong = "wrong-" + os.urandom(12).hex()
    SECRETS.append(wrong)
    FIGURES["faults"] += 2  # the worker and send, each with the wrong password
    names = f"sec-wrong-{os.urandom(4).hex()}."
    env = {**client_env(kafka, password=wrong), **worker_env(names, tmp_path / "data")}
    worker = WorkerProcess(env=env, log_path=tmp_path / "worker-wrong.log")
    LOGS.append(worker.log_path)
    worker.start(wait_ready=False)
    assert worker.process is not None
    # Well under the 60 s a broker that is merely unreachable is retried for.
    code = worker.process.wait(timeout=45)
    log = worker.log_path.read_text()
    assert code != 0, log
    assert f"refused SASL_SSL (SCRAM-SHA-512, user '{CLIENT_USER}'): SaslAuthenticationFailed" in log
    assert "Traceback" not in log

    events = tmp_path / "events.jsonl"
    events.write_text(
        orjson.dumps(
            {"type": "lead_profile", "event_id": "e1", "lead_id": "L1", "occurred_at": 1, "email": EMAIL}
        ).decode()
        + "\n"
    )
    sent = subprocess.run(
        [sys.executable, "-m", "streams", "send", str(events)],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )
    (tmp_path / "send-wrong.log").write_text(sent.stdout + sent.stderr)
    LOGS.append(tmp_path / "send-wrong.log")
    assert sent.returncode == 1, sent.stderr
    assert f"refused SASL_SSL (SCRAM-SHA-512, user '{CLIENT_USER}')" in sent.stderr


def test_plaintext_and_an_untrusted_ca_are_refused(kafka: LocalKafka, tmp_path: Path) -> None:
    address = kafka.config.address

    async def plaintext_producer() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=address, request_timeout_ms=5000)
        try:
            async with asyncio.timeout(60):
                await producer.start()
        finally:
            await producer.stop()

    with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
        asyncio.run(plaintext_producer())
    plain = settings_from_env({"LEADSCORE_BOOTSTRAP": address})
    with pytest.raises(KafkaAccessError, match="does it need LEADSCORE_SECURITY_PROTOCOL"):
        asyncio.run(check_connection(plain, timeout_s=3))

    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(make_certificates("127.0.0.1")[0])
    env = {
        **client_env(kafka, password=kafka.security.client_security().password),
        "LEADSCORE_SSL_CAFILE": str(other_ca),
    }
    began = time.monotonic()
    with pytest.raises(KafkaAccessError, match=f"TLS certificate of the Kafka broker {address} did not verify"):
        asyncio.run(check_connection(settings_from_env(env), timeout_s=60))
    assert time.monotonic() - began < 30  # refused, not retried until the deadline
    FIGURES["faults"] += 2  # a PLAINTEXT client, a client trusting another CA


def scram_secrets(kafka: LocalKafka) -> dict[str, list[str]]:
    """Each user's SCRAM salt, stored and server keys as the broker keeps them (its metadata log),
    and the salted password they derive from (base64 and hex)."""
    java = shutil.which("java")
    assert java is not None
    log = kafka.data_dir / "__cluster_metadata-0" / "00000000000000000000.log"
    dumped = subprocess.run(
        [
            java,
            "-cp",
            str(kafka.libs_dir / "*"),
            "kafka.tools.DumpLogSegments",
            "--cluster-metadata-decoder",
            "--files",
            str(log),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    passwords = dict(zip((ADMIN_USER, CLIENT_USER), kafka.security.secrets(), strict=True))
    found: dict[str, list[str]] = {}
    for match in re.finditer(r'"type":"USER_SCRAM_CREDENTIAL_RECORD","version":\d+,"data":(\{.*?\})\}', dumped):
        data = json.loads(match.group(1))
        salted = hashlib.pbkdf2_hmac(
            "sha512", passwords[data["name"]].encode(), base64.b64decode(data["salt"]), data["iterations"]
        )
        stored = hashlib.sha512(hmac.new(salted, b"Client Key", "sha512").digest()).digest()
        assert base64.b64encode(stored).decode() == data["storedKey"]  # the derivation is right
        found[data["name"]] = [base64.b64encode(salted).decode(), salted.hex(), data["storedKey"], data["serverKey"]]
    return found


def leaks(text: str, secrets: list[str]) -> list[str]:
    """What of the secrets, the input's e-mail addresses or any address at example.com/.org the text holds."""
    found = [f"secret #{i}" for i, secret in enumerate(secrets) if secret in text]
    return found + re.findall(r"[\w.+-]+@example\.(?:com|org)", text)


def test_no_log_holds_a_credential_or_an_email(kafka: LocalKafka) -> None:
    scram = scram_secrets(kafka)
    assert set(scram) == {ADMIN_USER, CLIENT_USER}
    secrets = [*kafka.security.secrets(), *SECRETS, *(s for values in scram.values() for s in values)]
    assert leaks(f"x {secrets[-1]} {EMAIL}", secrets) == [f"secret #{len(secrets) - 1}", EMAIL]  # the scan works
    assert len(LOGS) >= 4, "run with the other tests of this module: they capture the logs scanned here"
    texts = {path: path.read_text(errors="replace") for path in [*LOGS, kafka.log_file]}
    assert all(texts.values()), [str(p) for p, t in texts.items() if not t]
    assert sum("Worker ready" in text for text in texts.values()) == 2  # both scoring workers' logs are complete
    assert {str(path): leaks(text, secrets) for path, text in texts.items() if leaks(text, secrets)} == {}
    # The broker's own files: the passwords live only in their 0600 files and server.properties.
    for path in kafka.config.state_dir.glob("*"):
        if path.is_file() and path.name != "server.properties":
            assert leaks(path.read_text(errors="replace"), kafka.security.secrets()) == [], path
    assert oct(kafka.properties_file.stat().st_mode & 0o777) == "0o600"
    assert FIGURES["faults"] == 4
    counted = Figures(
        sent=FIGURES["sent"],
        lost=FIGURES["sent"] - FIGURES["scored"] - FIGURES["dead_lettered"],
        duplicated_ids=FIGURES["mql"] - 2,
        dead_lettered=FIGURES["dead_lettered"],
    )
    record_figures(
        "security (SASL_SSL, SCRAM-SHA-512)",
        counted,
        faults=FIGURES["faults"],
        notes=f"wrong password, PLAINTEXT and untrusted CA refused; {len(texts)} logs scanned: no secret, no e-mail",
    )
