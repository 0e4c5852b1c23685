"""One bus message limit everywhere the gateway runs: `llm-edge up`'s embedded server, compose's
nats.conf, Kubernetes' ConfigMap and the Helm values all say the same max_payload, and it holds a body at
the ingress's default limit."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from llm_edge.launcher import NATS_MAX_PAYLOAD, nats_config
from shared.config import IngressConfig

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _bytes(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)\s*([KMG]?B?)", value.strip().upper()).groups()  # type: ignore[union-attr]
    return int(number) * {"": 1, "B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}[unit]


def _setting(conf: str) -> str:
    match = re.search(r"^\s*max_payload:\s*(\S+)", conf, re.MULTILINE)
    assert match is not None, conf
    return match.group(1)


def test_every_deployment_sets_the_same_max_payload() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["nats"]
    assert "./nats/nats.conf:/etc/nats/nats.conf:ro" in compose["volumes"]
    assert compose["command"][1:3] == ["-c", "/etc/nats/nats.conf"]
    k8s = next(doc for doc in yaml.safe_load_all((DEPLOY / "k8s/base/nats.yaml").read_text())
               if doc["kind"] == "ConfigMap")
    helm = yaml.safe_load((DEPLOY / "k8s/nats-values.yaml").read_text())["config"]["merge"]["max_payload"]
    values = {
        "llm-edge up": _setting(nats_config("/tmp/x")),
        "compose": _setting((DEPLOY / "nats/nats.conf").read_text()),
        "kubernetes": _setting(k8s["data"]["nats.conf"]),
        "helm": helm.strip("<> "),
    }
    assert set(values.values()) == {NATS_MAX_PAYLOAD}, values


def test_max_payload_holds_the_default_body_limit_and_nats_allows_it() -> None:
    limit = _bytes(NATS_MAX_PAYLOAD)
    # Twice the body limit: a Messages request carries the native body beside the unified one.
    assert 2 * IngressConfig().max_body_bytes + 64 * 1024 <= limit <= 64 << 20  # nats-server's own ceiling
