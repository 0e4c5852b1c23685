"""`llm-edge`: run the whole gateway on one machine (`up`) or one service against `NATS_URL`."""

from __future__ import annotations

import argparse
import asyncio
import sys

from llm_edge.status import options as status_options
from shared import logs, runtime, tracing
from shared.config import Config, ConfigError, load


def _service(name: str, config: Config, provider: str | None = None) -> None:
    async def main() -> None:
        stop = runtime.stop_event()
        if name == "cache":
            from services.cache.service import serve

            await serve(config, stop)
        elif name == "router":
            from services.router.service import serve as serve_router

            await serve_router(config, stop)
        elif name == "provider":
            from services.providers.worker import serve as serve_provider

            assert provider is not None
            await serve_provider(config, provider, stop)

    runtime.run(main)


def _ingress(config: Config) -> None:
    from services.ingress.app import serve

    runtime.run(lambda: serve(config))  # uvicorn handles SIGTERM itself: stop accepting, finish, exit


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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Commands with options of their own, which argparse's REMAINDER would not pass through.
    if argv[:1] == ["bench"]:
        from llm_edge.bench.cli import main as bench_main

        return bench_main(argv[1:])
    if argv[:1] == ["hash-key"]:  # needs no configuration, and must not print anything else
        return hash_key(argv[1:])
    parser = argparse.ArgumentParser(prog="llm-edge", description=__doc__)
    parser.add_argument("--config", "-c", help="YAML or TOML configuration file (or LLM_EDGE_CONFIG)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start nats-server and every service on this machine")
    commands.add_parser("ingress", help="run the HTTP ingress")
    commands.add_parser("cache", help="run the cache service")
    commands.add_parser("router", help="run the router service")
    provider = commands.add_parser("provider", help="run one provider's worker")
    provider.add_argument("name")
    bench = commands.add_parser("bench", help="load-test an OpenAI-compatible URL and report", add_help=False)
    bench.add_argument("args", nargs=argparse.REMAINDER)
    commands.add_parser("hash-key", help="read an API key on stdin, print the SHA-256 digest to configure")
    status_options.add_arguments(commands.add_parser("status", help="service instances on the bus, nats-server numbers"))
    args = parser.parse_args(argv)

    if args.command == "status":  # needs no configuration: it only asks the bus what runs on it
        from llm_edge.status import command as status

        return status.main(args)
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"llm-edge: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "provider" and args.name not in config.providers:
        print(f"llm-edge: provider {args.name!r} is not configured (have: {', '.join(config.providers)})",
              file=sys.stderr)
        return 2
    service = args.command if args.command != "provider" else f"provider-{args.name}"
    logs.setup(service, config.log_level)
    if args.command != "up":
        tracing.setup(service, config.otel_endpoint)
    if args.command == "up":
        from llm_edge.launcher import up

        runtime.install_uvloop()
        return asyncio.run(up(config, args.config))
    try:
        if args.command == "ingress":
            _ingress(config)
        else:
            _service(args.command, config, getattr(args, "name", None))
    finally:
        tracing.shutdown()  # spans still queued are sent before the process exits
    return 0


if __name__ == "__main__":
    sys.exit(main())
