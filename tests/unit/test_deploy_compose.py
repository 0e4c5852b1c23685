"""The compose file, Prometheus and Grafana provisioning, the dashboard and the image under deploy/, against
the Compose specification, each other and the code (helpers in tests/unit/deploy_manifests.py).
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from fnmatch import fnmatch
from functools import cache
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from services.providers.settings import SETTINGS
from shared import metrics, runtime
from shared.config import load
from tests.unit.deploy_manifests import (
    DEPLOY,
    METRICS_PORT,
    OUR_COMPOSE_SERVICES,
    ROOT,
    Doc,
    _check_command,
    _yaml_docs,
    compose,
    interpolate,
)

# ------------------------------------------------------------------ compose


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
        image = interpolate(service["image"], {})
        assert not image.endswith(":latest") and ":" in image, f"{name}: pin the image ({image})"
    assert interpolate(services["nats"]["image"], {}) == "nats:2.10-alpine"
    assert {"-js", "-m"} <= set(services["nats"]["command"])
    assert interpolate(services["redis"]["image"], {}) == "redis:7-alpine"
    assert interpolate(services["redis"]["image"], {"REDIS_IMAGE": "mirror/redis:7"}) == "mirror/redis:7"
    exporter = services["nats-exporter"]
    assert interpolate(exporter["image"], {}).startswith("natsio/prometheus-nats-exporter:")
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
        env = {key: interpolate(str(value), shell) for key, value in service["environment"].items()}
        config_mount = next(m for m in service["volumes"] if m.split(":")[1] == env["LLM_EDGE_CONFIG"])
        config = load(DEPLOY / config_mount.split(":")[0], env=env, adapters=SETTINGS)
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
    for name in ("cache", "router", "logger", "provider-mock"):
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
        if isinstance(value, MetricWrapperBase):  # prometheus_client's own
            name, kind, labels = value._name, str(value._type), set(value._labelnames)
        elif isinstance(value, metrics.Family):  # a per-request metric (plain numbers, see shared/metrics.py)
            name, kind, labels = value.name, value.kind, set(value.labelnames)
        else:
            continue
        suffixes = {"counter": ["_total", "_created"], "gauge": [""],
                    "histogram": ["_bucket", "_sum", "_count", "_created"]}[kind]
        for suffix in suffixes:
            exposed[name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
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
    for line in (ROOT / ".dockerignore").read_text().splitlines():
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
def ingress_like() -> Iterator[tuple[int, list[str]]]:
    """A loopback server that answers 200 on /health/ready, as the ingress does, recording the paths asked."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(200 if self.path == "/health/ready" else 404)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.server_address[1], asked
    server.shutdown()
    server.server_close()


@pytest.fixture
def metrics_port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The real metrics and probe server of a cache, router or provider process, not yet ready."""
    monkeypatch.setattr(runtime, "_readiness", None)
    server = metrics.probe_server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()
    return port


def test_the_container_healthcheck_asks_the_ingress_for_readiness(ingress_like: tuple[int, list[str]]) -> None:
    healthcheck = _healthcheck_module()
    port, asked = ingress_like
    assert healthcheck.main({"PORT": str(port)}) == 0 and asked == ["/health/ready"]
    assert healthcheck.main({"PORT": str(_closed_port())}) == 1


def test_the_container_healthcheck_follows_a_workers_readiness(metrics_port: int) -> None:
    healthcheck = _healthcheck_module()
    env = {"PORT": str(_closed_port()), "METRICS_PORT": str(metrics_port)}
    assert healthcheck.main(env) == 1  # started, not yet on the bus
    taking_work = True
    runtime.notify_ready(lambda: taking_work)
    assert healthcheck.main(env) == 0
    taking_work = False  # lost the bus, or draining
    assert healthcheck.main(env) == 1
    assert healthcheck.main({"PORT": str(_closed_port()), "METRICS_PORT": str(_closed_port())}) == 1


def test_compose_runs_the_logger_with_the_request_log_on_and_sqlite_on_a_volume() -> None:
    services: dict[str, Doc] = compose()["services"]
    logger, ingress = services["logger"], services["ingress"]
    assert logger["command"] == ["logger"]
    for service in (logger, ingress):  # the ingress publishes the records, the logger writes them
        env = {key: interpolate(str(value), {}) for key, value in service["environment"].items()}
        config_mount = next(m for m in service["volumes"] if m.split(":")[1] == env["LLM_EDGE_CONFIG"])
        config = load(DEPLOY / config_mount.split(":")[0], env=env, adapters=SETTINGS)
        assert config.request_log.enabled is True
    off = {key: interpolate(str(value), {"ENABLE_REQUEST_LOG": "false"})
           for key, value in logger["environment"].items()}
    assert load(DEPLOY / "config" / "edge.yaml", env=off, adapters=SETTINGS).request_log.enabled is False
    assert config.request_log.database_url is None  # SQLite, at a relative path: in the working directory
    (data,) = [m for m in logger["volumes"] if m.split(":")[1] == logger["working_dir"]]
    assert data.split(":")[0] in compose()["volumes"] and not data.endswith(":ro")
    # The image makes that directory the unprivileged user's, so a new named volume is writable by it.
    final = _dockerfile_stages()[-1]
    user = dict(final)["USER"].split(":")[0]
    assert any(instruction == "RUN" and f"install -d -o {user} -g {user} {logger['working_dir']}" in rest
               for instruction, rest in final)
    postgres = {key: interpolate(str(value), {"REQUEST_LOG_DATABASE_URL": "postgresql://u:p@db/log"})
                for key, value in logger["environment"].items()}
    assert load(DEPLOY / "config" / "edge.yaml", env=postgres,
                adapters=SETTINGS).request_log.database_url == "postgresql://u:p@db/log"
