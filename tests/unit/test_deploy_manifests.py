"""deploy/, checked offline: compose.yaml against the Compose specification, every Kubernetes object
against the Kubernetes API schemas, and the references between files (commands, ports, selectors,
metric names, configuration) against each other and against the code.

The Kubernetes manifests are rendered the way `kubectl apply -k` would: by a small renderer here for the
kustomize features deploy/k8s uses (it refuses the others), checked against `kubectl kustomize` where
kubectl is installed. Schemas: deploy/schemas/compose-spec.json (see its README) and the copies of the
Kubernetes schemas that the `kubernetes-validate` package ships.
"""

from __future__ import annotations

import copy
import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from fnmatch import fnmatch
from functools import cache
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

import jsonschema
import msgspec
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from referencing import Registry, Resource

from services import cli
from shared import metrics
from shared.config import Config, load

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.31"  # the oldest Kubernetes minor version the manifests are checked against
IMAGE = "llm-edge"  # the image name in the base manifests; overlays rewrite it
OUR_COMPOSE_SERVICES = {"ingress", "cache", "router", "provider-mock", "provider-openai"}
METRICS_PORT = 9090

Doc = dict[str, Any]


def _yaml_docs(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _key(doc: Doc) -> tuple[str, str, str]:
    return doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"]


# ------------------------------------------------------------------ a kustomize subset

_KUSTOMIZE_FIELDS = {
    "apiVersion", "kind", "resources", "components", "namespace", "images", "replicas", "patches",
}
_CLUSTER_SCOPED = {"Namespace"}


def _merge(base: Any, patch: Any) -> Any:
    """Strategic merge as kustomize does it for what our patches touch: maps merge, lists of named
    items merge by name, anything else is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        assert not any(key.startswith("$") for key in patch), f"patch directives are not rendered: {patch}"
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    named = isinstance(base, list) and isinstance(patch, list) and all(
        isinstance(item, dict) and "name" in item for item in [*base, *patch]
    )
    if named:
        merged_list = [copy.deepcopy(item) for item in base]
        for item in patch:
            index = next((i for i, old in enumerate(merged_list) if old["name"] == item["name"]), None)
            if index is None:
                merged_list.append(copy.deepcopy(item))
            else:
                merged_list[index] = _merge(merged_list[index], item)
        return merged_list
    return copy.deepcopy(patch)


def _containers(doc: Doc) -> list[Doc]:
    if doc["kind"] not in ("Deployment", "StatefulSet"):
        return []
    spec = doc["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def render(directory: Path, accumulated: list[Doc] | None = None) -> list[Doc]:
    """The objects `kubectl kustomize directory` prints (in another order)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - _KUSTOMIZE_FIELDS
    assert not unknown, f"{directory}: this test does not render kustomize fields {sorted(unknown)}"
    docs = [] if accumulated is None else accumulated
    for entry in kustomization.get("resources", []):
        target = directory / entry
        docs = [*docs, *(render(target) if target.is_dir() else _yaml_docs(target))]
    for entry in kustomization.get("components", []):
        docs = render(directory / entry, docs)  # a component adds to, and transforms, what came before
    for entry in kustomization.get("patches", []):
        assert set(entry) == {"path"}, f"{directory}: only patches from a file are rendered: {entry}"
        for patch in _yaml_docs(directory / entry["path"]):
            targets = [doc for doc in docs if (doc["kind"], doc["metadata"]["name"]) ==
                       (patch["kind"], patch["metadata"]["name"])]
            assert len(targets) == 1, f"{entry['path']}: {patch['kind']}/{patch['metadata']['name']}"
            docs[docs.index(targets[0])] = _merge(targets[0], patch)
    for image in kustomization.get("images", []):
        for doc in docs:
            for container in _containers(doc):
                if re.split(r"[:@]", container["image"])[0] == image["name"]:
                    container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    for replicas in kustomization.get("replicas", []):
        targets = [doc for doc in docs if doc["kind"] in ("Deployment", "StatefulSet")
                   and doc["metadata"]["name"] == replicas["name"]]
        assert targets, f"{directory}: replicas for {replicas['name']}, which does not exist"
        for doc in targets:
            doc["spec"]["replicas"] = replicas["count"]
    if namespace := kustomization.get("namespace"):
        for doc in docs:
            if doc["kind"] not in _CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = namespace
    return docs


def _render_with_monitoring() -> list[Doc]:
    """The base plus the Prometheus Operator component, as an overlay that includes it renders."""
    return render(K8S / "base" / "monitoring", render(K8S / "base"))


RENDERS: dict[str, Callable[[], list[Doc]]] = {
    "base": lambda: render(K8S / "base"),
    "example": lambda: render(K8S / "overlays" / "example"),
    "base+monitoring": _render_with_monitoring,
}


@cache
def rendered(name: str) -> tuple[Doc, ...]:
    return tuple(RENDERS[name]())


def _objects(name: str, kind: str) -> list[Doc]:
    return [doc for doc in rendered(name) if doc["kind"] == kind]


def _named(render_name: str, kind: str, name: str) -> Doc:
    (found,) = [doc for doc in _objects(render_name, kind) if doc["metadata"]["name"] == name]
    return found


def _workloads(render_name: str) -> list[Doc]:
    return [doc for doc in rendered(render_name) if doc["kind"] in ("Deployment", "StatefulSet")]


def _ours(doc: Doc) -> bool:
    return any(re.split(r"[:@]", c["image"])[0].split("/")[-1] == IMAGE for c in _containers(doc))


# ------------------------------------------------------------------ helpers over objects


def _pod_labels(doc: Doc) -> dict[str, str]:
    return dict(doc["spec"]["template"]["metadata"].get("labels", {}))


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _port_refs(container: Doc) -> tuple[set[str], set[int]]:
    ports = container.get("ports", [])
    return {p["name"] for p in ports if "name" in p}, {p["containerPort"] for p in ports}


def _port_exists(ref: str | int, containers: list[Doc]) -> bool:
    names, numbers = set(), set()
    for container in containers:
        found_names, found_numbers = _port_refs(container)
        names |= found_names
        numbers |= found_numbers
    return ref in names if isinstance(ref, str) else ref in numbers


def _env(container: Doc, secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
        elif ref := var.get("valueFrom", {}).get("secretKeyRef"):
            assert ref["key"] in secrets[ref["name"]], var
            env[var["name"]] = "placeholder-from-secret"
    return env


def _config_map_file(docs: tuple[Doc, ...], container: Doc, tmp_path: Path) -> Path:
    """The configuration file a container reads: LLM_EDGE_CONFIG, from the ConfigMap mounted there."""
    path = Path(next(var["value"] for var in container["env"] if var["name"] == "LLM_EDGE_CONFIG"))
    mount = next(m for m in container["volumeMounts"] if path.parent == Path(m["mountPath"]))
    pods = [doc for doc in docs if container in _containers(doc)]
    volume = next(v for v in pods[0]["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    config_map = next(doc for doc in docs if doc["kind"] == "ConfigMap"
                      and doc["metadata"]["name"] == volume["configMap"]["name"])
    file = tmp_path / config_map["metadata"]["name"] / path.name
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(config_map["data"][path.name])
    return file


def _check_command(args: list[str], config: Config, capsys: pytest.CaptureFixture[str]) -> None:
    """`args` parse with the real `llm-edge` command line, and a provider worker's provider is configured."""
    with pytest.raises(SystemExit) as parsed:
        cli.main([*args, "--help"])
    capsys.readouterr()
    assert parsed.value.code == 0, f"`llm-edge {' '.join(args)}` is not a valid command"
    assert args[0] in {"ingress", "cache", "router", "provider"}, f"{args}: not a service"
    if args[0] == "provider":
        assert args[1] in config.providers, f"{args}: provider not configured (have {list(config.providers)})"


# ------------------------------------------------------------------ Kubernetes schemas


@cache
def _k8s_schema_dir() -> Path:
    directory = Path(str(resources.files("kubernetes_validate"))) / "kubernetes-json-schema"
    return directory / f"v{K8S_VERSION}.0-local-strict"


@cache
def _k8s_validator(kind: str, api_version: str) -> jsonschema.Draft202012Validator:
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema = json.loads((_k8s_schema_dir() / f"{kind.lower()}-{group_version}.json").read_text())
    registry = Resource.from_contents(_k8s_definitions()) @ Registry()
    return jsonschema.Draft202012Validator(schema, registry=registry)


@cache
def _k8s_definitions() -> Any:
    return json.loads((_k8s_schema_dir() / "_definitions.json").read_text())


CUSTOM_RESOURCES = {("monitoring.coreos.com/v1", "ServiceMonitor")}


@pytest.mark.parametrize("name", RENDERS)
def test_every_object_matches_the_kubernetes_schema(name: str) -> None:
    assert _k8s_schema_dir().is_dir(), f"kubernetes-validate has no schemas for Kubernetes {K8S_VERSION}"
    for doc in rendered(name):
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_RESOURCES:
            continue  # checked by hand below: their CRD schemas are not in kubernetes-validate
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in _k8s_validator(doc["kind"], doc["apiVersion"]).iter_errors(doc)]
        assert not errors, f"{name}: {doc['kind']}/{doc['metadata']['name']}: {errors}"


def test_service_monitors_select_services_and_ports_that_exist() -> None:
    docs = rendered("base+monitoring")
    monitors = [doc for doc in docs if doc["kind"] == "ServiceMonitor"]
    assert {m["metadata"]["name"] for m in monitors} == {"llm-edge-ingress", "llm-edge-workers", "nats"}
    services = [doc for doc in docs if doc["kind"] == "Service"]
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
        spec = monitor["spec"]
        assert set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
        selected = [s for s in services if _selects(spec["selector"]["matchLabels"], s["metadata"]["labels"])]
        assert selected, f"{monitor['metadata']['name']} selects no Service"
        for endpoint in spec["endpoints"]:
            assert set(endpoint) <= {"port", "path", "interval", "honorLabels", "scrapeTimeout"}
            assert re.fullmatch(r"\d+s", endpoint["interval"]) and endpoint["path"] == "/metrics"
            assert any(endpoint["port"] in {p["name"] for p in s["spec"]["ports"]} for s in selected)
    # Our metrics have a `service` label of their own; the operator's would rename it to exported_service.
    assert all(e.get("honorLabels") for m in monitors if m["metadata"]["name"] != "nats"
               for e in m["spec"]["endpoints"])


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("name", RENDERS)
def test_the_renderer_here_agrees_with_kubectl_kustomize(name: str, tmp_path: Path) -> None:
    target = {"base": K8S / "base", "example": K8S / "overlays" / "example"}.get(name)
    if target is None:  # kustomize builds a component only from a kustomization that includes it
        base = Path(os.path.relpath(K8S / "base", tmp_path))
        (tmp_path / "kustomization.yaml").write_text(
            f"resources: [{base.as_posix()}]\ncomponents: [{(base / 'monitoring').as_posix()}]\n"
        )
        target = tmp_path
    built = subprocess.run(
        ["kubectl", "kustomize", str(target)], check=False, capture_output=True, text=True, timeout=60
    )
    assert built.returncode == 0, built.stderr
    theirs = sorted((doc for doc in yaml.safe_load_all(built.stdout) if doc), key=_key)
    assert theirs == sorted(rendered(name), key=_key)


# ------------------------------------------------------------------ Kubernetes cross-references


@pytest.mark.parametrize("name", ["base", "example"])
def test_workloads_run_llm_edge_commands_with_a_configuration_that_has_their_provider(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = rendered(name)
    secrets = {doc["metadata"]["name"]: dict(doc.get("stringData", {}) or doc.get("data", {}))
               for doc in docs if doc["kind"] == "Secret"}
    ours = [doc for doc in docs if _ours(doc)]
    expected = {"ingress", "cache", "router", "provider-mock"}
    expected |= {"provider-openai"} if name == "example" else set()
    assert {doc["metadata"]["name"] for doc in ours} == expected
    for doc in ours:
        (container,) = doc["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["llm-edge"], doc["metadata"]["name"]
        config = load(_config_map_file(docs, container, tmp_path), env=_env(container, secrets))
        _check_command(container["args"], config, capsys)
        assert doc["metadata"]["name"] == "-".join(container["args"]), "named after its command"


def test_probes_and_scrape_annotations_name_ports_the_pod_exposes() -> None:
    for doc in _workloads("example"):
        containers = _containers(doc)
        for container in containers:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                handler = container.get(probe, {})
                for kind in ("httpGet", "tcpSocket"):
                    if kind in handler:
                        assert _port_exists(handler[kind]["port"], [container]), (_key(doc), probe)
        annotations = doc["spec"]["template"]["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") == "true":
            assert _port_exists(int(annotations["prometheus.io/port"]), containers), doc["metadata"]["name"]


@pytest.mark.parametrize("name", RENDERS)
def test_services_select_pods_that_have_their_target_ports(name: str) -> None:
    workloads = _workloads(name)
    for service in _objects(name, "Service"):
        pods = [w for w in workloads if _selects(service["spec"]["selector"], _pod_labels(w))]
        assert pods, f"Service {service['metadata']['name']} selects no pods"
        for port in service["spec"]["ports"]:
            for pod in pods:
                assert _port_exists(port["targetPort"], _containers(pod)), (service["metadata"]["name"], port)


@pytest.mark.parametrize("name", ["base", "example"])
def test_autoscalers_and_disruption_budgets_target_workloads_that_exist(name: str) -> None:
    workloads = {(d["kind"], d["metadata"]["name"]): d for d in _workloads(name)}
    autoscaled = set()
    for hpa in _objects(name, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        target = workloads.get((ref["kind"], ref["name"]))
        assert target is not None and ref["apiVersion"] == target["apiVersion"], hpa["metadata"]["name"]
        assert "replicas" not in target["spec"], f"{ref['name']}: the HPA owns the count, not the manifest"
        assert 1 < hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
        autoscaled.add(ref["name"])
    budgeted = set()
    for pdb in _objects(name, "PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        covered = [w for w in workloads.values() if _selects(selector, _pod_labels(w))]
        assert len(covered) == 1, f"PDB {pdb['metadata']['name']} covers {len(covered)} workloads"
        budgeted.add(covered[0]["metadata"]["name"])
    ours = {n for (_, n), doc in workloads.items() if _ours(doc)}
    assert ours <= budgeted
    assert {"ingress", "cache", "router", "provider-mock"} <= autoscaled
    assert ours - autoscaled <= {"provider-openai"}  # scaled by hand: CPU says little about a worker's load
    for name_, doc in workloads.items():
        if _ours(doc) and name_[1] not in autoscaled:
            assert doc["spec"]["replicas"] >= 2


@pytest.mark.parametrize("name", ["base", "example"])
def test_pods_are_hardened_bounded_and_drain_before_they_are_killed(name: str) -> None:
    for doc in _workloads(name):
        pod = doc["spec"]["template"]["spec"]
        where = doc["metadata"]["name"]
        # The `restricted` Pod Security Standard, which the example namespace enforces.
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False, where
        for container in _containers(doc):
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            resources_ = container["resources"]
            assert set(resources_["requests"]) == set(resources_["limits"]) == {"cpu", "memory"}, where
            assert "livenessProbe" in container and "readinessProbe" in container, where
        if _ours(doc):
            assert pod["terminationGracePeriodSeconds"] == 40, where
            (container,) = pod["containers"]
            writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
            assert writable == {"/tmp"}, where
            if container["args"] == ["ingress"]:
                assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
                assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
                assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
            else:
                assert container["readinessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
                assert {"name": "METRICS_PORT", "value": str(METRICS_PORT)} in container["env"]
                assert {"name": "metrics", "containerPort": METRICS_PORT} in container["ports"]


def test_the_example_overlay_sets_namespace_image_replicas_and_adds_openai() -> None:
    docs = rendered("example")
    (namespace,) = [doc for doc in docs if doc["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace["metadata"]["name"], _key(doc)
    images = {c["image"] for doc in docs if _ours(doc) for c in _containers(doc)}
    assert len(images) == 1 and re.fullmatch(r"[\w./-]+/llm-edge:[\w.-]+", images.pop())
    base_hpa, example_hpa = (
        {h["metadata"]["name"]: h["spec"]["minReplicas"] for h in _objects(name, "HorizontalPodAutoscaler")}
        for name in ("base", "example")
    )
    assert base_hpa.keys() == example_hpa.keys() and base_hpa != example_hpa
    openai = _named("example", "Deployment", "provider-openai")
    env = openai["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "OPENAI_API_KEY", "valueFrom": {"secretKeyRef": {
        "name": "llm-edge-provider-keys", "key": "OPENAI_API_KEY"}}} in env
    # Only the worker holds the key; the other services learn that openai exists from the configuration.
    others = [doc for doc in docs if _ours(doc) and doc is not openai]
    assert all("OPENAI_API_KEY" not in json.dumps(doc["spec"]) for doc in others)


def test_the_base_secret_holds_empty_placeholders_only() -> None:
    (secret,) = _objects("base", "Secret")
    assert secret["stringData"] == {"OPENAI_API_KEY": "", "ANTHROPIC_API_KEY": ""}


def test_nats_is_a_three_node_cluster_whose_routes_name_every_node() -> None:
    (nats,) = _objects("base", "StatefulSet")
    assert nats["spec"]["replicas"] == 3
    headless = _named("base", "Service", nats["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    assert {p["port"] for p in headless["spec"]["ports"]} >= {4222, 6222, 8222}
    config_map = _named("base", "ConfigMap", "nats-config")
    routes = re.findall(r"nats://([\w.-]+):(\d+)", config_map["data"]["nats.conf"])
    expected = {(f"{nats['metadata']['name']}-{i}.{headless['metadata']['name']}", "6222") for i in range(3)}
    assert set(routes) == expected
    container = next(c for c in nats["spec"]["template"]["spec"]["containers"] if c["name"] == "nats")
    assert container["image"] == "nats:2.10-alpine"
    server_name = {"name": "SERVER_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    assert server_name in container["env"]
    assert "$SERVER_NAME" in config_map["data"]["nats.conf"]
    # The exporter beside each node exports what the compose one does (the dashboard reads both).
    exporter = next(c for c in nats["spec"]["template"]["spec"]["containers"] if c["name"] == "exporter")
    compose_exporter = compose()["services"]["nats-exporter"]
    assert exporter["image"] == compose_exporter["image"]
    assert exporter["args"][:-1] == compose_exporter["command"][:-1]
    assert exporter["args"][-1] == "http://localhost:8222"


def test_the_configuration_points_at_services_that_exist(tmp_path: Path) -> None:
    config_map = _named("base", "ConfigMap", "llm-edge-config")
    file = tmp_path / "edge.yaml"
    file.write_text(config_map["data"]["edge.yaml"])
    config = load(file, env={})
    services = {s["metadata"]["name"]: {p["port"] for p in s["spec"]["ports"]}
                for s in _objects("base", "Service")}
    for url in (config.nats_url, config.cache.redis_url or ""):
        parsed = urlparse(url)
        assert parsed.hostname in services and parsed.port in services[parsed.hostname], url
    (ingress,) = _named("base", "Deployment", "ingress")["spec"]["template"]["spec"]["containers"]
    assert config.ingress.host == "0.0.0.0"
    assert {"name": "http", "containerPort": config.ingress.port} in ingress["ports"]


def test_the_example_configuration_only_adds_providers_and_routes(tmp_path: Path) -> None:
    configs = []
    for name in ("base", "example"):
        file = tmp_path / f"{name}.yaml"
        file.write_text(_named(name, "ConfigMap", "llm-edge-config")["data"]["edge.yaml"])
        configs.append(load(file, env={}))
    base, example = configs
    assert set(example.providers) == {*base.providers, "openai"} and example.models
    assert msgspec.structs.replace(example, providers=base.providers, models=base.models) == base


def test_compose_and_kubernetes_read_the_same_configuration() -> None:
    (config_map,) = [d for d in _yaml_docs(K8S / "base" / "configmap.yaml") if d["kind"] == "ConfigMap"]
    assert config_map["data"]["edge.yaml"] == (DEPLOY / "config" / "edge.yaml").read_text()


def test_nats_helm_values_describe_the_same_cluster() -> None:
    values = yaml.safe_load((K8S / "nats-values.yaml").read_text())
    assert values["config"]["cluster"] == {"enabled": True, "replicas": 3}
    assert values["config"]["jetstream"]["enabled"] is True and values["config"]["monitor"]["enabled"] is True
    assert values["promExporter"]["enabled"] is True
    assert values["fullnameOverride"] == "nats"  # so that nats://nats:4222 in the configuration resolves


# ------------------------------------------------------------------ compose


@cache
def compose() -> Doc:
    document: Doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return document


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}` and `${VAR:-default}` for the values this test reads."""
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: env.get(m[1]) or m[2] or "", value)


def test_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads((DEPLOY / "schemas" / "compose-spec.json").read_text())
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft202012Validator(schema).iter_errors(compose())]
    assert not errors


def test_compose_references_services_volumes_and_files_that_exist() -> None:
    services: dict[str, Doc] = compose()["services"]
    volumes = set(compose().get("volumes", {}))
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), (name, source)
            else:
                assert source in volumes, (name, source)
        if build := service.get("build"):
            assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()
        image = service["image"]
        assert not image.endswith(":latest") and ":" in image, f"{name}: pin the image ({image})"
    assert services["nats"]["image"] == "nats:2.10-alpine"
    assert {"-js", "-m"} <= set(services["nats"]["command"])
    assert services["redis"]["image"] == "redis:7-alpine"
    exporter = services["nats-exporter"]
    assert exporter["image"].startswith("natsio/prometheus-nats-exporter:")
    assert {"-varz", "-connz", "-routez", "-subz"} <= set(exporter["command"])
    assert any(arg.startswith("-jsz") for arg in exporter["command"])
    assert "http://nats:8222" in exporter["command"]


@pytest.mark.parametrize("shell", [{}, {"OPENAI_API_KEY": "sk-test"}], ids=["no-key", "openai-key"])
def test_compose_runs_each_llm_edge_service_as_the_cli_expects(
    shell: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    services: dict[str, Doc] = compose()["services"]
    ours = {name: s for name, s in services.items() if s.get("build")}
    assert set(ours) == OUR_COMPOSE_SERVICES
    assert len({json.dumps([s["image"], s["build"]], sort_keys=True) for s in ours.values()}) == 1
    for name, service in ours.items():
        env = {key: _interpolate(str(value), shell) for key, value in service["environment"].items()}
        config_mount = next(m for m in service["volumes"] if m.split(":")[1] == env["LLM_EDGE_CONFIG"])
        config = load(DEPLOY / config_mount.split(":")[0], env=env)
        if name != "provider-openai" or shell:  # the openai profile needs the key in the shell
            _check_command(service["command"], config, capsys)
        assert service["stop_grace_period"] == "35s", name
        assert service["read_only"] is True, name
        assert env["METRICS_PORT"] == str(METRICS_PORT)
        endpoint = urlparse(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert endpoint.hostname == "jaeger" and any(
            str(port).endswith(f":{endpoint.port}") for port in services["jaeger"]["ports"]
        ), name
        assert urlparse(config.nats_url).hostname == "nats"
        assert urlparse(config.cache.redis_url or "").hostname == "redis"
        assert "nats" in service["depends_on"], name
    for name in ("cache", "router", "provider-mock"):
        assert ours[name]["deploy"]["replicas"] == 2, name
    assert ours["provider-openai"]["profiles"] == ["openai"]
    assert "profiles" not in ours["provider-mock"]
    assert ours["ingress"]["ports"] == ["${LLM_EDGE_PORT:-8080}:8080"]
    assert "/health/ready" in " ".join(ours["ingress"]["healthcheck"]["test"])


def test_prometheus_scrapes_every_replica_of_every_service() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert set(config) == {"global", "scrape_configs"}
    jobs = config["scrape_configs"]
    assert len({job["job_name"] for job in jobs}) == len(jobs)
    scraped: dict[str, int] = {}
    for job in jobs:
        assert not job.get("relabel_configs"), "target labels would rename the metrics' own labels"
        for sd in job.get("dns_sd_configs", []):
            assert sd["type"] == "A"
            scraped.update(dict.fromkeys(sd["names"], sd["port"]))
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                scraped[host] = int(port)
    services = compose()["services"]
    for name in OUR_COMPOSE_SERVICES:
        assert scraped[name] == (8080 if name == "ingress" else METRICS_PORT), name
    assert scraped["nats-exporter"] == 7777
    assert set(scraped) <= set(services) | {"localhost"}
    mounted = [m for m in services["prometheus"]["volumes"] if m.startswith("./prometheus/prometheus.yml:")]
    assert f"--config.file={mounted[0].split(':')[1]}" in services["prometheus"]["command"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_prometheus_configuration() -> None:
    checked = subprocess.run(
        ["promtool", "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
        check=False, capture_output=True, text=True, timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


# ------------------------------------------------------------------ Grafana


@cache
def dashboard() -> Doc:
    document: Doc = json.loads((DEPLOY / "grafana" / "dashboards" / "llm-edge.json").read_text())
    return document


def _exposed_metrics() -> dict[str, set[str]]:
    """Every sample name shared/metrics.py exposes, with the labels it can carry."""
    exposed: dict[str, set[str]] = {}
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        labels = set(value._labelnames)
        suffixes = {"counter": ["_total", "_created"], "gauge": [""],
                    "histogram": ["_bucket", "_sum", "_count", "_created"]}[value._type]
        for suffix in suffixes:
            exposed[value._name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return exposed


def _queries() -> Iterator[tuple[str, str]]:
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for variable in dashboard()["templating"]["list"]:
        yield f"${variable['name']}", variable["definition"]


def test_grafana_provisioning_matches_compose_and_the_dashboard() -> None:
    grafana = compose()["services"]["grafana"]
    mounts = dict(m.rsplit(":", 2)[:2] for m in grafana["volumes"] if m.startswith("./"))
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    provisioning = DEPLOY / "grafana" / "provisioning"
    (datasources,) = _yaml_docs(provisioning / "datasources" / "llm-edge.yaml")
    by_uid = {ds["uid"]: ds for ds in datasources["datasources"]}
    assert urlparse(by_uid["prometheus"]["url"]).hostname == "prometheus"
    assert urlparse(by_uid["jaeger"]["url"]).hostname == "jaeger"
    (providers,) = _yaml_docs(provisioning / "dashboards" / "llm-edge.yaml")
    (provider,) = providers["providers"]
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/llm-edge.json"
    used = {p["datasource"]["uid"] for p in dashboard()["panels"] if p["type"] != "row"}
    used |= {t["datasource"]["uid"] for p in dashboard()["panels"] for t in p.get("targets", [])}
    assert used == {"prometheus"} and used <= by_uid.keys()


def test_dashboard_has_the_panels_an_operator_needs_laid_out_without_overlap() -> None:
    panels = dashboard()["panels"]
    assert dashboard()["uid"] == "llm-edge"
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] != "row":
            refs = [t["refId"] for t in panel["targets"]]
            assert refs and len(set(refs)) == len(refs), panel["title"]
            assert all(t["expr"] for t in panel["targets"]), panel["title"]
    titles = " | ".join(p["title"].lower() for p in panels)
    for needed in ["request rate by status and origin", "p50 / p95 / p99", "gateway overhead p50 / p99",
                   "cache hit ratio by tier", "tokens / s by type", "cost per hour by provider / model",
                   "provider availability", "active requests", "bus round-trip p99 by subject",
                   "nats server messages / s", "nats slow consumers"]:
        assert needed in titles, needed


def test_dashboard_queries_use_metrics_and_labels_that_exist() -> None:
    exposed = _exposed_metrics()
    exporter_flags = compose()["services"]["nats-exporter"]["command"]
    for where, query in _queries():
        names = set(re.findall(r"\b(?:llm_edge|gnatsd)_\w+", query))
        assert names, f"{where}: no metric in {query}"
        labels = {"job", "instance"}
        for name in names:
            if name.startswith("gnatsd_"):
                endpoint = name.split("_")[1]  # gnatsd_<endpoint>_<field>: the exporter must poll it
                flag = {"subsz": "-subz"}.get(endpoint, f"-{endpoint}")
                assert flag in exporter_flags, f"{where}: {name} needs the exporter's {flag}"
                labels.add("server_id")
            else:
                assert name in exposed, f"{where}: {name} is not a metric shared/metrics.py exposes"
                labels |= exposed[name]
        used = {label.strip() for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", query)
                for label in group.split(",") if label.strip()}
        for selector in re.findall(r"\{([^}]*)\}", query):
            used |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector))
        used |= set(re.findall(r"label_values\(\s*\w+\s*,\s*(\w+)\s*\)", query))
        assert used <= labels, f"{where}: labels {sorted(used - labels)} are not on {sorted(names)}"
        if "histogram_quantile" in query:
            assert all(n.endswith("_bucket") for n in names), f"{where}: quantiles need _bucket series"
            assert re.search(r"\bby\s*\([^)]*\ble\b", query), f"{where}: a quantile must keep `le`"


# ------------------------------------------------------------------ the image


def _dockerfile_stages() -> list[list[tuple[str, str]]]:
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    args: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, rest = line.strip().partition(" ")
        instruction = instruction.upper()
        if instruction == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
            continue
        if instruction == "FROM":
            stages.append([])
            rest = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], rest)
        stages[-1].append((instruction, rest.strip()))
    return stages


def _dockerignored(path: str) -> bool:
    """Whether Docker leaves `path` out of the build context (last matching pattern wins; a pattern
    that matches a parent directory matches its contents)."""
    ignored = False
    for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/").replace("**/", "*")
        parts = path.split("/")
        if any(fnmatch("/".join(parts[: i + 1]), pattern) for i in range(len(parts))):
            ignored = not negated
    return ignored


def test_the_image_builds_in_two_stages_and_runs_unprivileged() -> None:
    stages = _dockerfile_stages()
    assert len(stages) == 2
    assert [stage[0] for stage in stages] == [
        ("FROM", "python:3.11-slim-bookworm AS build"), ("FROM", "python:3.11-slim-bookworm"),
    ]
    final = dict(stages[-1])
    user = final["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0, "a numeric non-root user, so runAsNonRoot can check it"
    assert "HEALTHCHECK" in final and json.loads(final["ENTRYPOINT"]) == ["llm-edge"]
    assert not any(word in rest for instruction, rest in stages[-1] if instruction == "RUN"
                   for word in ("apt-get", "pip ", "gcc", "build-essential"))
    for stage in stages:
        for instruction, rest in stage:
            if instruction == "COPY" and not rest.startswith("--from"):
                for source in rest.split()[:-1]:
                    assert (ROOT / source).exists(), source
                    assert not _dockerignored(source), f"{source} is copied but left out of the build context"
    for excluded in (".venv", ".git", "tests", "bench", "deploy/compose.yaml"):
        assert _dockerignored(excluded), excluded


def _healthcheck_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_healthcheck", DEPLOY / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def http_server() -> Iterator[tuple[int, list[str]]]:
    """A loopback server that answers 200 on /health/live and /metrics, recording the paths asked."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(200 if self.path in ("/health/live", "/metrics") else 404)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.server_address[1], asked
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()
    return port


def test_the_container_healthcheck_asks_whichever_service_runs(http_server: tuple[int, list[str]]) -> None:
    healthcheck = _healthcheck_module()
    port, asked = http_server
    closed = str(_closed_port())
    assert healthcheck.main({"PORT": str(port)}) == 0 and asked == ["/health/live"]
    assert healthcheck.main({"PORT": closed, "METRICS_PORT": str(port)}) == 0 and asked[-1] == "/metrics"
    assert healthcheck.main({"PORT": closed, "METRICS_PORT": closed}) == 1
    assert healthcheck.main({"PORT": closed}) == 1
