"""Loaders, a kustomize renderer and helpers shared by test_deploy_k8s.py and test_deploy_compose.py.

deploy/, checked offline: compose.yaml against the Compose specification, every Kubernetes object
against the Kubernetes API schemas, and the references between files (commands, ports, selectors,
metric names, configuration) against each other and against the code.

The Kubernetes manifests are rendered by `kubectl kustomize`, exactly as `kubectl apply -k` would. Schemas:
deploy/schemas/compose-spec.json (see its README) and the copies of the
Kubernetes schemas that the `kubernetes-validate` package ships.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource

from llm_edge import cli
from shared.config import Config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.31"  # the oldest Kubernetes minor version the manifests are checked against
IMAGE = "llm-edge"  # the image name in the base manifests; overlays rewrite it
OUR_COMPOSE_SERVICES = {"ingress", "cache", "router", "logger", "provider-mock", "provider-openai"}
METRICS_PORT = 9090

Doc = dict[str, Any]


def _yaml_docs(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _key(doc: Doc) -> tuple[str, str, str]:
    return doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"]


# ------------------------------------------------------------------ rendering: kustomize itself


def _containers(doc: Doc) -> list[Doc]:
    if doc["kind"] not in ("Deployment", "StatefulSet"):
        return []
    spec = doc["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def kustomize(directory: Path) -> list[Doc]:
    """The objects `kubectl apply -k directory` would apply, rendered by kubectl's own kustomize (the
    machine's kubectl, or the one `make dev` installs into the venv when the machine has none)."""
    kubectl = shutil.which("kubectl") or shutil.which("kubectl", path=str(Path(sys.executable).parent))
    assert kubectl is not None, "kubectl (with kustomize) is needed: `make dev` installs one when missing"
    built = subprocess.run([kubectl, "kustomize", str(directory)], check=False, capture_output=True, text=True,
                           timeout=60)
    assert built.returncode == 0, f"kubectl kustomize {directory}: {built.stderr}"
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


def _render_with_monitoring() -> list[Doc]:
    """The base plus the Prometheus Operator component, as an overlay that includes it renders."""
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(os.path.relpath(K8S / "base", scratch))
        (Path(scratch) / "kustomization.yaml").write_text(
            f"resources: [{base.as_posix()}]\ncomponents: [{(base / 'monitoring').as_posix()}]\n")
        return kustomize(Path(scratch))


RENDERS: dict[str, Callable[[], list[Doc]]] = {
    "base": lambda: kustomize(K8S / "base"),
    "example": lambda: kustomize(K8S / "overlays" / "example"),
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


_PLACEHOLDERS = {"REQUEST_LOG_DATABASE_URL": "postgresql://user:password@postgres/llm_edge"}


def _env(container: Doc, secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
        elif ref := var.get("valueFrom", {}).get("secretKeyRef"):
            assert ref["key"] in secrets[ref["name"]], var
            # A value of the variable's shape: a provider key enables its provider, a URL must parse.
            placeholder = _PLACEHOLDERS.get(var["name"], "placeholder-from-secret")
            env[var["name"]] = secrets[ref["name"]][ref["key"]] or placeholder
    return env


def _config_map_file(docs: tuple[Doc, ...], container: Doc, tmp_path: Path) -> Path:
    """The configuration file a container reads: LLM_EDGE_CONFIG, from the ConfigMap mounted there."""
    path = Path(next(var["value"] for var in container["env"] if var["name"] == "LLM_EDGE_CONFIG"))
    mount = next(m for m in container["volumeMounts"] if path.parent == Path(m["mountPath"]))
    pods = [doc for doc in docs if container in _containers(doc)]
    volume = next(v for v in pods[0]["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    config_map = next(doc for doc in docs if doc["kind"] == "ConfigMap"
                      and doc["metadata"]["name"] == volume["configMap"]["name"])
    file: Path = tmp_path / config_map["metadata"]["name"] / path.name
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(config_map["data"][path.name])
    return file


def _check_command(args: list[str], config: Config, capsys: pytest.CaptureFixture[str]) -> None:
    """`args` parse with the real `llm-edge` command line, and a provider worker's provider is configured."""
    with pytest.raises(SystemExit) as parsed:
        cli.main([*args, "--help"])
    capsys.readouterr()
    assert parsed.value.code == 0, f"`llm-edge {' '.join(args)}` is not a valid command"
    assert args[0] in {"ingress", "cache", "router", "logger", "provider"}, f"{args}: not a service"
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


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}` and `${VAR:-default}` for the values the tests read."""
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: env.get(m[1]) or m[2] or "", value)


@cache
def compose() -> Doc:
    document: Doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return document
