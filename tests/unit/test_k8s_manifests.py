"""The Kubernetes manifests in deploy/k8s, checked without a cluster.

Every document is validated, strictly (unknown fields are errors), against the official
Kubernetes JSON schemas (generated from the API server's OpenAPI document) that the
``kubernetes-validate`` wheel ships: no download at test time. Then what a schema cannot see: the
probes, selectors, mounts and settings agree with each other and with the worker.
"""

from __future__ import annotations

import copy
import importlib
import tomllib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from streams.settings import PREFIX, SettingsError, settings_from_env

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = REPO_ROOT / "deploy" / "k8s"
DEFAULT_RULES = REPO_ROOT / "scoring" / "default_rules.toml"
# The schemas of a Kubernetes release still in wide use, and of the newest the package ships.
PINNED_KUBERNETES = "1.30.0"
POD_LABELS = {"app.kubernetes.io/name": "leadscore", "app.kubernetes.io/component": "worker"}


@pytest.fixture(scope="module")
def kubernetes_validate() -> ModuleType:
    try:
        module = importlib.import_module("kubernetes_validate")
    except ImportError:
        pytest.fail(
            "kubernetes-validate is not installed: it ships the Kubernetes JSON schemas these tests "
            "validate against; run `bash deploy/setup-venv.sh` (pip install -e '.[dev]')"
        )
    return module


def kubernetes_versions() -> list[str]:
    try:
        from kubernetes_validate.utils import latest_version
    except ImportError:
        return [PINNED_KUBERNETES]  # the kubernetes_validate fixture then fails with the reason
    return [PINNED_KUBERNETES, latest_version()]


def manifest_files() -> list[Path]:
    return sorted(path for path in K8S_DIR.glob("*.yaml") if path.name != "kustomization.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def all_documents() -> list[dict[str, Any]]:
    return [doc for path in manifest_files() for doc in documents(path)]


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in all_documents() if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''} in deploy/k8s, found {len(found)}"
    return found[0]


def statefulset() -> dict[str, Any]:
    return one("StatefulSet", "leadscore")


def worker_container() -> dict[str, Any]:
    containers = statefulset()["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["worker"]
    container: dict[str, Any] = containers[0]
    return container


def env_configmap() -> dict[str, str]:
    data: dict[str, str] = one("ConfigMap", "leadscore-env")["data"]
    return data


def schema_validate(module: ModuleType, doc: dict[str, Any], version: str) -> bool:
    """Raise unless ``doc`` is valid, with no unknown field, for that Kubernetes version; True if it is."""
    module.validate(doc, version, strict=True)
    return True


# --- the schemas -------------------------------------------------------------------------------


def test_there_are_manifests() -> None:
    kinds = sorted(d["kind"] for d in all_documents())
    assert kinds == [
        "ConfigMap",
        "ConfigMap",
        "ConfigMap",
        "Deployment",
        "Namespace",
        "PodDisruptionBudget",
        "PodDisruptionBudget",
        "Service",
        "Service",
        "Service",
        "StatefulSet",
    ]
    # Secrets are created with kubectl (collector.yaml's comment), never committed.
    assert "Secret" not in kinds


@pytest.mark.parametrize("version", kubernetes_versions())
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_manifest_is_valid_against_the_kubernetes_schemas(
    kubernetes_validate: ModuleType, path: Path, version: str
) -> None:
    docs = documents(path)
    assert docs, f"{path.name} has no documents"
    for doc in docs:
        # An unknown kind or apiVersion raises SchemaNotFoundError: a failure too, never a skip.
        schema_validate(kubernetes_validate, doc, version)


def broken_deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "broken"},
        "spec": {
            "replicas": "two",
            "selector": {"matchLabels": {"app": "broken"}},
            "template": {
                "metadata": {"labels": {"app": "broken"}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
            },
        },
    }


def _valid_deployment(doc: dict[str, Any]) -> None:
    doc["spec"]["replicas"] = 2


def _unknown_container_field(doc: dict[str, Any]) -> None:
    doc["spec"]["template"]["spec"]["containers"][0]["imagee"] = "leadscore:0.1.0"


def _probe_port_of_wrong_type(doc: dict[str, Any]) -> None:
    doc["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = ["http"]


def _missing_required_field(doc: dict[str, Any]) -> None:
    del doc["spec"]["selector"]


def test_a_valid_deployment_passes(kubernetes_validate: ModuleType) -> None:
    # Control for the next test: the broken Deployment differs from a valid one by replicas alone.
    doc = broken_deployment()
    _valid_deployment(doc)
    assert schema_validate(kubernetes_validate, doc, PINNED_KUBERNETES)


def test_the_validation_rejects_a_string_for_replicas(kubernetes_validate: ModuleType) -> None:
    with pytest.raises(kubernetes_validate.ValidationError) as caught:
        schema_validate(kubernetes_validate, broken_deployment(), PINNED_KUBERNETES)
    assert list(caught.value.path) == ["spec", "replicas"]
    assert "'two' is not of type 'integer'" in caught.value.message


@pytest.mark.parametrize(
    ("breakage", "expected_path"),
    [
        (_unknown_container_field, ["spec", "template", "spec", "containers", 0]),
        (_probe_port_of_wrong_type, ["spec", "template", "spec", "containers", 0, "livenessProbe", "httpGet", "port"]),
        (_missing_required_field, ["spec"]),
    ],
    ids=["unknown-field", "probe-port-type", "missing-selector"],
)
def test_the_validation_rejects_a_broken_statefulset(
    kubernetes_validate: ModuleType, breakage: Callable[[dict[str, Any]], None], expected_path: list[Any]
) -> None:
    doc = copy.deepcopy(statefulset())
    breakage(doc)
    with pytest.raises(kubernetes_validate.ValidationError) as caught:
        schema_validate(kubernetes_validate, doc, PINNED_KUBERNETES)
    assert list(caught.value.path) == expected_path, caught.value.message


def test_an_unknown_kind_is_an_error_not_a_pass(kubernetes_validate: ModuleType) -> None:
    doc = {"apiVersion": "apps/v1", "kind": "StatefulSett", "metadata": {"name": "x"}}
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        schema_validate(kubernetes_validate, doc, PINNED_KUBERNETES)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text(encoding="utf-8"))
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == [p.name for p in manifest_files()]
    namespace = one("Namespace")["metadata"]["name"]
    assert kustomization["namespace"] == namespace
    # The namespace comes from the kustomization alone, never hard-coded in a manifest.
    assert all("namespace" not in d["metadata"] for d in all_documents())


# --- what the schemas cannot see ---------------------------------------------------------------


def test_container_serves_http_on_the_workers_port() -> None:
    container = worker_container()
    assert container["image"] == "leadscore:0.1.0"
    assert container["ports"] == [{"name": "http", "containerPort": 6066, "protocol": "TCP"}]
    assert env_configmap()[PREFIX + "WEB_PORT"] == "6066"
    # 127.0.0.1, the default, would answer nothing outside the pod: no probe, no scrape.
    assert env_configmap()[PREFIX + "WEB_HOST"] == "0.0.0.0"


def test_image_tag_is_the_project_version() -> None:
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert worker_container()["image"] == f"leadscore:{version}"
    assert statefulset()["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] == version


def test_probes_use_livez_and_readyz_on_the_named_port() -> None:
    container = worker_container()
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz"), ("startupProbe", "/readyz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}, probe


def test_startup_probe_leaves_time_for_a_table_recovery() -> None:
    startup = worker_container()["startupProbe"]
    # The alert LeadscoreTableRecoveryStuck fires after 15 minutes; the kubelet must not restart
    # the pod (and start the recovery over) before that.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 15 * 60


def test_pod_security() -> None:
    pod = statefulset()["spec"]["template"]["spec"]
    container = worker_container()
    assert pod["terminationGracePeriodSeconds"] == 60
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    resources = container["resources"]
    assert set(resources) == {"requests", "limits"}
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}


def test_data_dir_is_the_persistent_volume() -> None:
    sts = statefulset()
    claims = {c["metadata"]["name"]: c for c in sts["spec"]["volumeClaimTemplates"]}
    mounts = {m["mountPath"]: m["name"] for m in worker_container()["volumeMounts"]}
    data_dir = env_configmap()[PREFIX + "DATA_DIR"]
    assert data_dir == "/var/lib/leadscore"
    assert mounts[data_dir] in claims
    assert claims[mounts[data_dir]]["spec"]["accessModes"] == ["ReadWriteOnce"]


MIB = 1024 * 1024
STATE_BYTES = 8 * 1024  # per cached lead state (README Operating, "Memory")
WORKER_BASE_BYTES = 256 * MIB  # a worker with an empty cache, rounded up


def memory_bytes(quantity: str) -> int:
    units = {"Mi": MIB, "Gi": 1024 * MIB}
    return int(quantity[:-2]) * units[quantity[-2:]]


def test_every_partition_s_state_cache_fits_the_memory_limit_on_one_pod() -> None:
    env = env_configmap()
    cached = int(env[PREFIX + "STATE_CACHE"]) * int(env[PREFIX + "PARTITIONS"])
    limit = memory_bytes(worker_container()["resources"]["limits"]["memory"])
    assert WORKER_BASE_BYTES + cached * STATE_BYTES <= limit


def test_rules_file_is_the_mounted_configmap_key() -> None:
    container = worker_container()
    rules_file = Path(env_configmap()[PREFIX + "RULES_FILE"])
    assert rules_file == Path("/etc/leadscore/rules.toml")
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(rules_file.parent))
    assert mount.get("readOnly") is True
    volume = next(v for v in statefulset()["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    source = volume["configMap"]
    assert {"key": "rules.toml", "path": rules_file.name} in source["items"]
    assert "rules.toml" in one("ConfigMap", source["name"])["data"]


RULES_KEY_LINE = "  rules.toml: |\n"


def configmap_with_rules(configmap_text: str, rules: str) -> str:
    """configmap.yaml's text with the rules.toml key (its last entry) replaced by ``rules``."""
    head, found, _ = configmap_text.partition(RULES_KEY_LINE)
    assert found, f"no {RULES_KEY_LINE.strip()!r} line in deploy/k8s/configmap.yaml"
    body = "".join(f"    {line}" if line.strip() else "\n" for line in rules.splitlines(keepends=True))
    return head + RULES_KEY_LINE + body


def test_configmap_rules_equal_the_default_rules() -> None:
    rules = one("ConfigMap", "leadscore-rules")["data"]["rules.toml"]
    assert rules == DEFAULT_RULES.read_text(encoding="utf-8"), (
        "deploy/k8s/configmap.yaml's rules.toml differs from scoring/default_rules.toml; "
        "copy it over with `.venv/bin/python -m tests.unit.test_k8s_manifests`"
    )


def test_the_copy_of_the_rules_is_exact() -> None:
    # The regenerated file parses back to the same rules, byte for byte (blank lines, comments).
    text = configmap_with_rules(
        (K8S_DIR / "configmap.yaml").read_text(encoding="utf-8"), DEFAULT_RULES.read_text(encoding="utf-8")
    )
    rules = [d for d in yaml.safe_load_all(text) if d["metadata"]["name"] == "leadscore-rules"]
    assert rules[0]["data"]["rules.toml"] == DEFAULT_RULES.read_text(encoding="utf-8")


def test_env_comes_from_the_configmap() -> None:
    sources = [s["configMapRef"] for s in worker_container()["envFrom"]]
    # The Kafka security settings come from the kafka-sasl-ssl component, when it is enabled.
    assert sources == [{"name": "leadscore-env"}, {"name": SECURITY_CONFIGMAP, "optional": True}]
    one("ConfigMap", "leadscore-env")


class RecordingEnv(Mapping[str, str]):
    """An environment that remembers which variables were looked up."""

    def __init__(self, data: Mapping[str, str]) -> None:
        self.data = dict(data)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def unread_variables(data: Mapping[str, str]) -> list[str]:
    """The ConfigMap's variables that the worker's settings never look up (typos, stale names)."""
    env = RecordingEnv(data)
    settings_from_env(env)
    return sorted(set(data) - env.read)


def test_every_configmap_variable_is_a_setting_the_worker_reads() -> None:
    data = env_configmap()
    assert all(name.startswith(PREFIX) for name in data), sorted(data)
    assert unread_variables(data) == []


def test_a_misspelt_variable_is_caught() -> None:
    data = {**env_configmap(), "LEADSCORE_BOOTSTRAP_SERVERS": "kafka:9092", "LEADSCORE_TOPIC_MQL_HANDOF": "x"}
    assert unread_variables(data) == ["LEADSCORE_BOOTSTRAP_SERVERS", "LEADSCORE_TOPIC_MQL_HANDOF"]


def test_configmap_values_are_accepted_by_the_worker() -> None:
    settings = settings_from_env(env_configmap())
    assert settings.web_host == "0.0.0.0"
    assert settings.web_port == 6066
    assert settings.data_dir == Path("/var/lib/leadscore")
    assert settings.rules_file == Path("/etc/leadscore/rules.toml")
    assert settings.store == "rocksdb://"


# --- selectors ---------------------------------------------------------------------------------


def test_statefulset_selector_matches_its_pods() -> None:
    spec = statefulset()["spec"]
    assert spec["selector"]["matchLabels"] == POD_LABELS
    assert POD_LABELS.items() <= spec["template"]["metadata"]["labels"].items()


def test_pdb_selects_the_statefulsets_pods() -> None:
    pdb = one("PodDisruptionBudget", "leadscore")["spec"]
    pod_labels = statefulset()["spec"]["template"]["metadata"]["labels"]
    assert pdb["maxUnavailable"] == 1
    assert "minAvailable" not in pdb
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["selector"]["matchLabels"] == statefulset()["spec"]["selector"]["matchLabels"]


def test_services_select_the_pods_and_target_the_named_port() -> None:
    pod_labels = statefulset()["spec"]["template"]["metadata"]["labels"]
    headless = one("Service", statefulset()["spec"]["serviceName"])["spec"]
    assert headless["clusterIP"] == "None"
    api = one("Service", "leadscore")["spec"]
    assert api.get("type", "ClusterIP") == "ClusterIP"
    assert api.get("clusterIP") != "None"
    for spec in (headless, api):
        assert spec["selector"].items() <= pod_labels.items()
        assert spec["ports"] == [{"name": "http", "port": 6066, "targetPort": "http", "protocol": "TCP"}]


def test_canonical_url_names_the_pod_through_the_headless_service() -> None:
    env = {e["name"]: e for e in worker_container()["env"]}
    url = env["LEADSCORE_CANONICAL_URL"]["value"]
    service = statefulset()["spec"]["serviceName"]
    assert url == f"http://$(POD_NAME).{service}.$(POD_NAMESPACE).svc:6066"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    # $(VAR) expands only variables defined earlier in the list.
    names = list(env)
    assert names.index("POD_NAME") < names.index("LEADSCORE_CANONICAL_URL")
    assert names.index("POD_NAMESPACE") < names.index("LEADSCORE_CANONICAL_URL")


def test_pods_are_annotated_for_prometheus() -> None:
    annotations = statefulset()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "6066"
    assert annotations["prometheus.io/path"] == "/metrics"


# --- Kafka security: the optional kafka-sasl-ssl component ---------------------------------------

COMPONENT_DIR = K8S_DIR / "kafka-sasl-ssl"
SECURITY_CONFIGMAP = "leadscore-kafka-security"
KAFKA_SECRETS = {"leadscore-kafka", "leadscore-kafka-ca"}
CREDENTIALS_VOLUME = "kafka-credentials"
STAND_IN_PASSWORD = "stand-in password"


def component() -> dict[str, Any]:
    kustomization: dict[str, Any] = yaml.safe_load((COMPONENT_DIR / "kustomization.yaml").read_text(encoding="utf-8"))
    return kustomization


def component_documents() -> list[dict[str, Any]]:
    return [doc for name in component()["resources"] for doc in documents(COMPONENT_DIR / name)]


def security_settings() -> dict[str, str]:
    """The component's ConfigMap: the Kafka security variables of a secured cluster."""
    found = [d for d in component_documents() if d["kind"] == "ConfigMap"]
    assert [d["metadata"]["name"] for d in found] == [SECURITY_CONFIGMAP]
    data: dict[str, str] = found[0]["data"]
    return data


def pod_environment(container: dict[str, Any], *, secured: bool) -> dict[str, str]:
    """A pod's variables: its ConfigMaps' (envFrom) and its own env list, a secret's value stood in
    for by ``secret:<key>``. ``secured``: with the kafka-sasl-ssl component and its Secrets; else a
    PLAINTEXT dev cluster, where they do not exist (their references are optional)."""
    variables: dict[str, str] = {}
    for source in container["envFrom"]:
        name = source["configMapRef"]["name"]
        if name == SECURITY_CONFIGMAP:
            variables |= security_settings() if secured else {}
        else:
            variables |= one("ConfigMap", name)["data"]
    for entry in container.get("env", []):
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if "value" in entry:
            variables[entry["name"]] = entry["value"]
        elif ref is not None and (secured or ref["name"] not in KAFKA_SECRETS):
            variables[entry["name"]] = "secret:" + ref["key"]
    return variables


def pod_of(name: str) -> dict[str, Any]:
    workload = statefulset() if name == "worker" else collector_deployment()
    pod: dict[str, Any] = workload["spec"]["template"]["spec"]
    return pod


def container_of(name: str) -> dict[str, Any]:
    return worker_container() if name == "worker" else collector_container()


def projected_files(name: str) -> dict[Path, tuple[str, str]]:
    """The files of a pod's Kafka credentials volume: path -> (secret, key)."""
    mount = next(m for m in container_of(name)["volumeMounts"] if m["name"] == CREDENTIALS_VOLUME)
    volume = next(v for v in pod_of(name)["volumes"] if v["name"] == CREDENTIALS_VOLUME)
    files = {}
    for source in volume["projected"]["sources"]:
        for item in source["secret"]["items"]:
            files[Path(mount["mountPath"]) / item["path"]] = (source["secret"]["name"], item["key"])
    return files


def with_files(name: str, variables: dict[str, str], root: Path) -> dict[str, str]:
    """``variables`` with each path of the credentials volume moved under ``root``, where the file
    then exists (the password file holds a stand-in), as the kubelet would project it."""
    moved = dict(variables)
    for path in projected_files(name):
        for variable, value in variables.items():
            if Path(value) == path:
                local = root / path.relative_to(path.anchor)
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_text(STAND_IN_PASSWORD + "\n" if path.name == "password" else "a CA\n", encoding="utf-8")
                moved[variable] = str(local)
    return moved


PODS = ["worker", "collector"]


@pytest.mark.parametrize("version", kubernetes_versions())
def test_the_component_is_valid_and_only_adds_the_settings(kubernetes_validate: ModuleType, version: str) -> None:
    kustomization = component()
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
    assert kustomization["kind"] == "Component"
    files = sorted(p.name for p in COMPONENT_DIR.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == files
    docs = component_documents()
    for doc in docs:
        schema_validate(kubernetes_validate, doc, version)
    assert [d["kind"] for d in docs] == ["ConfigMap"]  # no Secret committed, no patch
    assert all("namespace" not in d["metadata"] for d in docs)
    # The base kustomization says how to enable it.
    base = (K8S_DIR / "kustomization.yaml").read_text(encoding="utf-8")
    assert f"#   - {COMPONENT_DIR.name}\n" in base


@pytest.mark.parametrize("pod", PODS)
def test_without_the_component_a_pod_connects_in_plaintext(pod: str) -> None:
    # A dev cluster: neither the component's ConfigMap nor the Secrets exist, and may not.
    container = container_of(pod)
    security_refs = [s["configMapRef"] for s in container["envFrom"] if s["configMapRef"]["name"] == SECURITY_CONFIGMAP]
    assert security_refs == [{"name": SECURITY_CONFIGMAP, "optional": True}]
    secret_refs = [e["valueFrom"]["secretKeyRef"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})]
    assert all(ref["optional"] is True for ref in secret_refs if ref["name"] in KAFKA_SECRETS)
    volume = next(v for v in pod_of(pod)["volumes"] if v["name"] == CREDENTIALS_VOLUME)
    assert all(source["secret"]["optional"] is True for source in volume["projected"]["sources"])
    variables = pod_environment(container, secured=False)
    assert unread_variables(variables) == []
    assert settings_from_env(variables).security.protocol == "PLAINTEXT"


@pytest.mark.parametrize("pod", PODS)
def test_with_the_component_a_pod_reads_every_security_variable(pod: str, tmp_path: Path) -> None:
    variables = with_files(pod, pod_environment(container_of(pod), secured=True), tmp_path)
    assert set(security_settings()) <= set(variables)
    assert unread_variables(variables) == []
    security = settings_from_env(variables).security
    assert (security.protocol, security.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert security.username == "secret:username"
    assert security.password == STAND_IN_PASSWORD  # read from the file; no password variable
    assert PREFIX + "SASL_PASSWORD" not in variables
    assert security.cafile is not None
    assert security.cafile.is_file()


@pytest.mark.parametrize("pod", PODS)
def test_the_files_the_settings_name_are_the_projected_secret_keys(pod: str) -> None:
    files = projected_files(pod)
    settings = security_settings()
    assert files[Path(settings[PREFIX + "SASL_PASSWORD_FILE"])] == ("leadscore-kafka", "password")
    assert files[Path(settings[PREFIX + "SSL_CAFILE"])] == ("leadscore-kafka-ca", "ca.crt")
    username = next(e for e in container_of(pod)["env"] if e["name"] == PREFIX + "SASL_USERNAME")
    assert username["valueFrom"]["secretKeyRef"]["name"] == "leadscore-kafka"
    mount = next(m for m in container_of(pod)["volumeMounts"] if m["name"] == CREDENTIALS_VOLUME)
    assert mount["readOnly"] is True
    # Readable by the leadscore group (the pod's fsGroup), by no one else.
    volume = next(v for v in pod_of(pod)["volumes"] if v["name"] == CREDENTIALS_VOLUME)
    assert volume["projected"]["defaultMode"] == 0o440
    context = pod_of(pod)["securityContext"]
    assert context["fsGroup"] == context["runAsGroup"] == 10001


def test_the_kafka_secrets_are_documented_with_every_key_the_pods_read() -> None:
    text = (COMPONENT_DIR / "kustomization.yaml").read_text(encoding="utf-8")
    for pod in PODS:
        refs = set(projected_files(pod).values())
        refs |= {
            (ref["name"], ref["key"])
            for e in container_of(pod)["env"]
            if (ref := e.get("valueFrom", {}).get("secretKeyRef")) is not None and ref["name"] in KAFKA_SECRETS
        }
        assert {secret for secret, _ in refs} == KAFKA_SECRETS
        for secret, key in refs:
            command = text.partition(f"create secret generic {secret} ")[2].split("kubectl")[0]
            assert f"--from-literal={key}=" in command or f"--from-file={key}=" in command, (secret, key)


@pytest.mark.parametrize(
    ("name", "misspelt"),
    [
        ("LEADSCORE_SSL_CAFILE", "LEADSCORE_SSL_CA_FILE"),
        ("LEADSCORE_SASL_MECHANISM", "LEADSCORE_SASL_MECHANISMS"),
        ("LEADSCORE_SECURITY_PROTOCOL", "LEADSCORE_KAFKA_SECURITY_PROTOCOL"),
    ],
)
def test_a_misspelt_security_variable_is_caught(name: str, misspelt: str, tmp_path: Path) -> None:
    variables = with_files("worker", pod_environment(worker_container(), secured=True), tmp_path)
    variables[misspelt] = variables.pop(name)
    if name == "LEADSCORE_SECURITY_PROTOCOL":  # PLAINTEXT then: the SASL variables are refused
        with pytest.raises(SettingsError, match="is set but LEADSCORE_SECURITY_PROTOCOL is PLAINTEXT"):
            settings_from_env(variables)
    else:
        assert unread_variables(variables) == [misspelt]


def test_a_misspelt_password_file_or_user_stops_the_pod(tmp_path: Path) -> None:
    variables = with_files("collector", pod_environment(collector_container(), secured=True), tmp_path)
    for name, expected in (("SASL_PASSWORD_FILE", "needs LEADSCORE_SASL_PASSWORD"), ("SASL_USERNAME", "needs")):
        broken = dict(variables)
        broken[PREFIX + "SASL_" + name] = broken.pop(PREFIX + name)
        with pytest.raises(SettingsError, match=expected):
            settings_from_env(broken)


# --- the collector -----------------------------------------------------------------------------

COLLECTOR_LABELS = {"app.kubernetes.io/name": "leadscore", "app.kubernetes.io/component": "collector"}
COLLECTOR_SECRET = "leadscore-collector"


def collector_deployment() -> dict[str, Any]:
    return one("Deployment", "leadscore-collector")


def collector_container(deployment: dict[str, Any] | None = None) -> dict[str, Any]:
    containers = (deployment or collector_deployment())["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["collector"]
    container: dict[str, Any] = containers[0]
    return container


def collector_environment(deployment: dict[str, Any] | None = None) -> dict[str, str]:
    """The collector pod's LEADSCORE_* variables on a PLAINTEXT cluster (see pod_environment)."""
    return pod_environment(collector_container(deployment), secured=False)


def test_collector_is_a_stateless_deployment_of_two() -> None:
    deployment = collector_deployment()["spec"]
    assert deployment["replicas"] == 2
    assert deployment["selector"]["matchLabels"] == COLLECTOR_LABELS
    assert COLLECTOR_LABELS.items() <= deployment["template"]["metadata"]["labels"].items()
    pod = deployment["template"]["spec"]
    assert "volumeClaimTemplates" not in deployment
    assert all("persistentVolumeClaim" not in volume for volume in pod.get("volumes", []))
    container = collector_container()
    assert container["args"] == ["collect"]
    assert container["image"] == worker_container()["image"]
    # The worker's selectors never pick a collector pod, nor the reverse.
    assert not POD_LABELS.items() <= deployment["template"]["metadata"]["labels"].items()


def test_collector_port_and_probes_are_the_settings() -> None:
    settings = settings_from_env(collector_environment())
    port = settings.collector.port
    assert port == 6070
    # 127.0.0.1, the default, would answer nothing outside the pod.
    assert settings.collector.host == "0.0.0.0"
    container = collector_container()
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    annotations = collector_deployment()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"
    service = one("Service", "leadscore-collector")["spec"]
    assert service["selector"] == COLLECTOR_LABELS
    assert service["ports"] == [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}]


def test_collector_routes_answer_the_probe_paths() -> None:
    from collector.app import build_app

    variables = collector_environment()
    del variables["LEADSCORE_SENDGRID_PUBLIC_KEY"]  # a stand-in value is not a key the app accepts
    app = build_app(settings_from_env(variables))
    paths = {resource.canonical for resource in app.router.resources()}
    container = collector_container()
    assert {container[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe")} <= paths
    assert "/metrics" in paths


def test_every_collector_variable_is_a_setting_it_reads() -> None:
    variables = collector_environment()
    assert all(name.startswith(PREFIX) for name in variables), sorted(variables)
    assert unread_variables(variables) == []


@pytest.mark.parametrize(
    ("name", "misspelt"),
    [
        ("LEADSCORE_COLLECTOR_WRITE_KEYS", "LEADSCORE_COLLECTOR_WRITEKEYS"),
        ("LEADSCORE_COLLECTOR_TOKEN_SECRET", "LEADSCORE_TOKEN_SECRET"),
        ("LEADSCORE_SENDGRID_PUBLIC_KEY", "LEADSCORE_COLLECTOR_SENDGRID_PUBLIC_KEY"),
    ],
)
def test_a_misspelt_collector_variable_is_caught(name: str, misspelt: str) -> None:
    deployment = copy.deepcopy(collector_deployment())
    entry = next(e for e in collector_container(deployment)["env"] if e["name"] == name)
    entry["name"] = misspelt
    assert unread_variables(collector_environment(deployment)) == [misspelt]


def test_collector_secrets_reach_their_settings() -> None:
    collector = settings_from_env(collector_environment()).collector
    assert collector.write_keys == ("secret:write-keys",)
    assert collector.token_secret == "secret:token-secret"
    assert collector.sendgrid_public_key == "secret:sendgrid-public-key"
    assert collector.cookie_secure is True


def test_collector_secrets_come_from_the_documented_secret() -> None:
    refs = [e["valueFrom"]["secretKeyRef"] for e in collector_container()["env"] if "valueFrom" in e]
    refs = [ref for ref in refs if ref["name"] not in KAFKA_SECRETS]  # kafka-sasl-ssl's (tested below)
    assert {ref["name"] for ref in refs} == {COLLECTOR_SECRET}
    assert all("value" not in e for e in collector_container()["env"])
    # collector.yaml's comment creates that secret with every key the pods read.
    text = (K8S_DIR / "collector.yaml").read_text(encoding="utf-8")
    assert f"create secret generic {COLLECTOR_SECRET} " in text
    for ref in refs:
        assert f"--from-literal={ref['key']}=" in text, ref["key"]
    # Only the SendGrid key may be missing (webhooks then unauthenticated, with a warning).
    optional = {ref["key"] for ref in refs if ref.get("optional")}
    assert optional == {"sendgrid-public-key"}


def test_collector_shares_the_workers_kafka_and_topic_settings() -> None:
    # It creates missing topics: same brokers, names, partitions and replication as the workers.
    assert collector_container()["envFrom"][0] == {"configMapRef": {"name": "leadscore-env"}}
    collector = settings_from_env(collector_environment())
    worker = settings_from_env(env_configmap())
    assert collector.bootstrap_servers == worker.bootstrap_servers
    assert collector.topics == worker.topics
    assert collector.partitions == worker.partitions


def test_collector_pod_security() -> None:
    pod = collector_deployment()["spec"]["template"]["spec"]
    container = collector_container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in {v["name"]: v for v in pod["volumes"]}[mounts["/tmp"]]
    assert set(container["resources"]["requests"]) == set(container["resources"]["limits"]) == {"cpu", "memory"}


def test_collector_pdb_keeps_one_up() -> None:
    pdb = one("PodDisruptionBudget", "leadscore-collector")["spec"]
    assert pdb["selector"]["matchLabels"] == collector_deployment()["spec"]["selector"]["matchLabels"]
    assert 1 <= pdb["minAvailable"] < collector_deployment()["spec"]["replicas"]


if __name__ == "__main__":
    # Copy scoring/default_rules.toml into deploy/k8s/configmap.yaml.
    configmap = K8S_DIR / "configmap.yaml"
    updated = configmap_with_rules(configmap.read_text(encoding="utf-8"), DEFAULT_RULES.read_text(encoding="utf-8"))
    configmap.write_text(updated, encoding="utf-8")
    print(f"copied {DEFAULT_RULES.relative_to(REPO_ROOT)} into {configmap.relative_to(REPO_ROOT)}")
