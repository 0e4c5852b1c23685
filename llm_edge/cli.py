"""`llm-edge`: run the whole gateway on one machine (`up`) or one service against `NATS_URL`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable

from llm_edge.status import options as status_options
from shared import logs, runtime, secrets, tracing
from shared.config import Config, ConfigError, load

# Each service command's way to run, chosen by the parser (set_defaults), so no command falls through.


def _until_stopped(serve: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run a bus service until SIGTERM or SIGINT (the event needs the running loop: made inside it)."""

    async def main() -> None:
        await serve(runtime.stop_event())

    runtime.run(main)


def _serve_cache(config: Config, args: argparse.Namespace) -> None:
    from services.cache.service import serve

    _until_stopped(lambda stop: serve(config, stop))


def _serve_router(config: Config, args: argparse.Namespace) -> None:
    from services.router.service import serve

    _until_stopped(lambda stop: serve(config, stop))


def _serve_provider(config: Config, args: argparse.Namespace) -> None:
    from services.providers.worker import serve

    _until_stopped(lambda stop: serve(config, args.name, stop))


def _serve_logger(config: Config, args: argparse.Namespace) -> None:
    from services.logger.service import serve

    _until_stopped(lambda stop: serve(config, stop))


def _serve_ingress(config: Config, args: argparse.Namespace) -> None:
    from services.ingress.app import serve

    # The one process that answers clients keeps the default policy (see runtime.batch_scheduling).
    runtime.run(lambda: serve(config), batch=False)  # uvicorn handles SIGTERM itself: stop accepting, finish, exit


def hash_key(argv: list[str]) -> int:
    """The digest that `keys[].sha256` wants: the key is read from stdin (prompted for, unechoed, on a
    terminal), so it never lands in the shell's history or the process list."""
    if argv:
        print("usage: llm-edge hash-key < file-holding-the-key", file=sys.stderr)
        return 2
    from services.ingress.auth import digest

    if sys.stdin.isatty():
        import getpass

        key = getpass.getpass("API key: ")
    else:
        key = sys.stdin.readline().rstrip("\r\n")
    if not key:
        print("llm-edge: no key on stdin", file=sys.stderr)
        return 2
    print(digest(key))
    return 0


def _config_option(p: argparse.ArgumentParser, top: bool) -> None:
    # Accepted before the command and after it: the subcommand's copy leaves the value alone unless given.
    p.add_argument("--config", "-c", default=None if top else argparse.SUPPRESS,
                   help="YAML or TOML configuration file (or LLM_EDGE_CONFIG)")


def parser() -> argparse.ArgumentParser:
    """Every command is a real subcommand with its own `--help`; a mistake exits 2 with a message."""
    top = argparse.ArgumentParser(prog="llm-edge", description=__doc__)
    _config_option(top, top=True)
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, **kwargs: object) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help, **kwargs)  # type: ignore[arg-type]
        _config_option(sub, top=False)
        return sub

    command("up", "start nats-server and every service on this machine").set_defaults(run=_run_up)
    for name, help, serve in (("ingress", "run the HTTP ingress", _serve_ingress),
                              ("cache", "run the cache service", _serve_cache),
                              ("router", "run the router service", _serve_router),
                              ("logger", "run the request log's writer (SQLite or PostgreSQL)", _serve_logger)):
        command(name, help).set_defaults(run=_run_service, serve=serve)
    provider = command("provider", "run one provider's worker")
    provider.add_argument("name", help="a provider named in the configuration")
    provider.set_defaults(run=_run_service, serve=_serve_provider)
    from llm_edge.bench.cli import add_arguments as bench_arguments

    bench = command("bench", "load-test an OpenAI-compatible URL and report")
    bench_arguments(bench)
    bench.set_defaults(run=_run_bench)
    command("hash-key", "read an API key on stdin, print the SHA-256 digest to configure").set_defaults(
        run=lambda args: hash_key([]))
    check = command("check-config", "load and validate the configuration (file and environment), then say "
                    "what it serves; exits 2 naming the bad field")
    check.add_argument("--json", action="store_true", help="the providers and models as one JSON object")
    check.set_defaults(run=_run_check_config)
    from llm_edge import keys as keys_cli

    keys = command("keys", "create, list, show, update, rotate, revoke API keys (the admin API)")
    keys_cli.add_arguments(keys)
    keys.set_defaults(run=keys_cli.run)
    spend = command("spend", "spend and usage per key, tenant or model (the admin API)")
    keys_cli.add_spend_arguments(spend)
    spend.set_defaults(run=keys_cli.run)
    from llm_edge import logs as request_logs

    query = command("logs", "the request log, newest first, from a running logger (filters: key, model, "
                    "status, time)")
    request_logs.add_arguments(query)
    query.set_defaults(run=_run_logs)
    status = command("status", "service instances on the bus, nats-server numbers")
    status_options.add_arguments(status)
    status.set_defaults(run=_run_status)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    result: int = args.run(args)
    return result


def _run_bench(args: argparse.Namespace) -> int:
    from llm_edge.bench.cli import run_parsed

    return run_parsed(args)


def _run_status(args: argparse.Namespace) -> int:
    from llm_edge.status import command as status  # needs no configuration: it only asks the bus

    return status.main(args)


def _run_logs(args: argparse.Namespace) -> int:
    config = _configured(args)
    if config is None:
        return 2
    from llm_edge import logs as request_logs

    return request_logs.main(config, args)


def _configured(args: argparse.Namespace) -> Config | None:
    try:
        # The adapters' settings decide what each provider entry may hold; shared/ imports no service.
        from services.providers.settings import SETTINGS

        config = load(args.config, adapters=SETTINGS)
    except ConfigError as exc:
        print(f"llm-edge: configuration error: {exc}", file=sys.stderr)
        return None
    if args.command == "provider" and args.name not in config.providers:
        print(f"llm-edge: provider {args.name!r} is not configured (have: {', '.join(config.providers)})",
              file=sys.stderr)
        return None
    return config


def _run_check_config(args: argparse.Namespace) -> int:
    """What `llm-edge up` asks before a reload. Names only: the configuration holds secrets."""
    config = _configured(args)
    if config is None:
        return 2
    providers, models = list(config.providers), [route.name for route in config.models]
    if args.json:
        print(json.dumps({"providers": providers, "models": models}))
    else:
        print(f"configuration ok: providers {', '.join(providers)}; models {', '.join(models) or '(conventions only)'}")
    return 0


def _run_up(args: argparse.Namespace) -> int:
    config = _configured(args)
    if config is None:
        return 2
    logs.setup("up", config.log_level, secrets.configured(config))
    from llm_edge.launcher import up

    runtime.batch_scheduling()  # nats-server and the services inherit it
    runtime.install_uvloop()
    return asyncio.run(up(config, args.config))


def _run_service(args: argparse.Namespace) -> int:
    config = _configured(args)
    if config is None:
        return 2
    service = args.command if args.command != "provider" else f"provider-{args.name}"
    logs.setup(service, config.log_level, secrets.configured(config))
    tracing.setup(service, config.tracing_endpoint)
    try:
        args.serve(config, args)
    finally:
        tracing.shutdown()  # spans still queued are sent before the process exits
    return 0


if __name__ == "__main__":
    sys.exit(main())
