"""The Kubernetes manifests under deploy/k8s, rendered as `kubectl apply -k` would, against the Kubernetes API
schemas, each other, the configuration and the code (helpers in tests/unit/deploy_manifests.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlparse

import msgspec
import pytest
import yaml

from services.providers.settings import SETTINGS
from shared.config import load
from tests.unit.deploy_manifests import (
    CUSTOM_RESOURCES,
    DEPLOY,
    K8S,
    K8S_VERSION,
    METRICS_PORT,
    RENDERS,
    _check_command,
    _config_map_file,
    _containers,
    _env,
    _k8s_schema_dir,
    _k8s_validator,
    _key,
    _named,
    _objects,
    _ours,
    _pod_labels,
    _port_exists,
    _selects,
    _workloads,
    _yaml_docs,
    compose,
    interpolate,
    rendered,
)


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


# ------------------------------------------------------------------ Kubernetes cross-references


@pytest.mark.parametrize("name", ["base", "example"])
def test_workloads_run_llm_edge_commands_with_a_configuration_that_has_their_provider(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = rendered(name)
    secrets = {doc["metadata"]["name"]: dict(doc.get("stringData", {}) or doc.get("data", {}))
               for doc in docs if doc["kind"] == "Secret"}
    ours = [doc for doc in docs if _ours(doc)]
    expected = {"ingress", "cache", "router", "logger", "provider-mock"}
    expected |= {"provider-openai"} if name == "example" else set()
    assert {doc["metadata"]["name"] for doc in ours} == expected
    for doc in ours:
        (container,) = doc["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["llm-edge"], doc["metadata"]["name"]
        config = load(_config_map_file(docs, container, tmp_path), env=_env(container, secrets), adapters=SETTINGS)
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
    assert {"ingress", "cache", "router", "logger", "provider-mock"} <= autoscaled
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
            # The logger's SQLite goes in its working directory (see deploy/k8s/base/logger).
            assert writable == {"/tmp", *filter(None, [container.get("workingDir")])}, where
            if container["args"] == ["ingress"]:
                assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
                assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
                assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
            else:
                assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "metrics"}
                assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "metrics"}
                assert container["startupProbe"]["httpGet"] == {"path": "/health/live", "port": "metrics"}
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
    secrets = {doc["metadata"]["name"]: doc["stringData"] for doc in _objects("base", "Secret")}
    assert secrets == {
        "llm-edge-provider-keys": dict.fromkeys(["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY",
                                                 "AZURE_OPENAI_API_KEY", "AWS_BEARER_TOKEN_BEDROCK"], ""),
        "llm-edge-request-log": {"REQUEST_LOG_DATABASE_URL": ""},
    }


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
    assert exporter["image"] == interpolate(compose_exporter["image"], {})
    assert exporter["args"][:-1] == compose_exporter["command"][:-1]
    assert exporter["args"][-1] == "http://localhost:8222"


def test_the_configuration_points_at_services_that_exist(tmp_path: Path) -> None:
    config_map = _named("base", "ConfigMap", "llm-edge-config")
    file = tmp_path / "edge.yaml"
    file.write_text(config_map["data"]["edge.yaml"])
    config = load(file, env={}, adapters=SETTINGS)
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
        configs.append(load(file, env={}, adapters=SETTINGS))
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


@pytest.mark.parametrize("name", ["base", "example"])
def test_the_logger_runs_like_the_other_bus_services_with_a_database_it_can_write(
    name: str, tmp_path: Path
) -> None:
    docs = rendered(name)
    logger = next(doc for doc in _workloads(name) if doc["metadata"]["name"] == "logger")
    cache_ = next(doc for doc in _workloads(name) if doc["metadata"]["name"] == "cache")
    (container,) = _containers(logger)
    (cached,) = _containers(cache_)
    assert container["args"] == ["logger"] and container["command"] == ["llm-edge"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):  # the template's, on the metrics port
        assert container[probe] == cached[probe], probe
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # SQLite (the relative request_log.sqlite_path) lands in the working directory: a writable volume.
    config = load(_config_map_file(docs, container, tmp_path), env={}, adapters=SETTINGS)
    assert not Path(config.request_log.sqlite_path).is_absolute()
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == container["workingDir"]]
    assert not mount.get("readOnly")
    volume = next(v for v in logger["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert "emptyDir" in volume
    # PostgreSQL from a Secret that the manifests define, with the key the logger reads.
    (database,) = [e for e in container["env"] if e["name"] == "REQUEST_LOG_DATABASE_URL"]
    ref = database["valueFrom"]["secretKeyRef"]
    secret = next(doc for doc in docs if doc["kind"] == "Secret" and doc["metadata"]["name"] == ref["name"])
    assert ref["key"] in secret["stringData"]
    postgres = load(_config_map_file(docs, container, tmp_path),
                    env={"REQUEST_LOG_DATABASE_URL": "postgresql://u:p@db/log"}, adapters=SETTINGS)
    assert postgres.request_log.database_url == "postgresql://u:p@db/log"
    assert _pod_labels(logger)["app.kubernetes.io/component"] == "logger"
    assert any(hpa["spec"]["scaleTargetRef"]["name"] == "logger" for hpa in _objects(name, "HorizontalPodAutoscaler"))
