"""`llm-edge keys ...` and `llm-edge spend`: the admin API from the command line.

They talk to an ingress's admin API over HTTP (`--url` or LLM_EDGE_URL; the admin key from LLM_EDGE_ADMIN_KEY
or `--admin-key-file`, never from a flag's value, which the process list shows), not to the bus: the API is
the one place that checks the settings, generates secrets and logs what was done, an operator's machine
needs no bus credentials, and what the command shows is exactly what a script calling the API would get.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"
URL_ENV, KEY_ENV = "LLM_EDGE_URL", "LLM_EDGE_ADMIN_KEY"
_SETTINGS = ("models", "rpm", "tpm", "budget_usd", "tenant", "pii")
_COLUMNS = ("name", "source", "tenant", "models", "rpm", "tpm", "budget_usd")
_SPEND_COLUMNS = ("requests", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd")


class Failed(Exception):
    """What to tell the operator (exit status 1)."""


def _none_or(kind: type[int] | type[float]) -> Any:
    def parse(value: str) -> int | float | None:
        return None if value.lower() == "none" else kind(value)

    parse.__name__ = f"{kind.__name__} or none"
    return parse


def _models(value: str) -> list[str] | None:
    return None if value.lower() == "none" else [m.strip() for m in value.split(",") if m.strip()]


def _tenant(value: str) -> str | None:
    return None if value.lower() == "none" else value


def _settings(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", type=_models, default=argparse.SUPPRESS,
                   help="comma-separated public model names it may use (none: every model)")
    p.add_argument("--rpm", type=_none_or(int), default=argparse.SUPPRESS, help="requests per minute (none: no limit)")
    p.add_argument("--tpm", type=_none_or(int), default=argparse.SUPPRESS, help="tokens per minute (none: no limit)")
    p.add_argument("--budget-usd", dest="budget_usd", type=_none_or(float), default=argparse.SUPPRESS,
                   help="spend per budget period, USD (none: no budget)")
    p.add_argument("--tenant", type=_tenant, default=argparse.SUPPRESS,
                   help="cache namespace shared with the tenant's other keys (none: the key's own name)")
    p.add_argument("--pii", type=_tenant, default=argparse.SUPPRESS,
                   choices=["off", "redact", "block", "redact_restore", None],
                   help="the key's own PII mode: off, redact, block or redact_restore (none: the gateway's default)")


def _connection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=None, help=f"the ingress (or {URL_ENV}; default {DEFAULT_URL})")
    p.add_argument("--admin-key-file", default=None, help=f"a file holding the admin key (or {KEY_ENV})")
    p.add_argument("--json", action="store_true", help="the API's JSON answer as it is")


def add_arguments(keys: argparse.ArgumentParser) -> None:
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a key; its secret is printed once")
    create.add_argument("--name", default=argparse.SUPPRESS, help="the key's name (generated when left out)")
    _settings(create)
    actions.add_parser("list", help="every key: the configuration's (read-only) and the API's")
    for name, help in (("show", "one key's settings"), ("rotate", "a new secret for a key; the old one stops working"),
                       ("revoke", "delete a key: it stops working on every replica")):
        actions.add_parser(name, help=help).add_argument("name")
    update = actions.add_parser("update", help="change a key's settings (only those given)")
    update.add_argument("name")
    _settings(update)
    for action in actions.choices.values():
        _connection(action)


def add_spend_arguments(spend: argparse.ArgumentParser) -> None:
    spend.add_argument("--group-by", default="key", help="key, tenant, model, or several comma-separated")
    spend.add_argument("--period", choices=("today", "month"), default=None, help="default: this month (UTC)")
    spend.add_argument("--from", dest="start", default=None, help="ISO 8601 date or date-time, or unix seconds")
    spend.add_argument("--to", dest="end", default=None, help="(exclusive) as --from")
    _connection(spend)


def _client(args: argparse.Namespace) -> httpx.Client:
    key = Path(args.admin_key_file).read_text().strip() if args.admin_key_file else os.environ.get(KEY_ENV, "")
    if not key:
        raise Failed(f"no admin key: set {KEY_ENV} or give --admin-key-file")
    url = args.url or os.environ.get(URL_ENV) or DEFAULT_URL
    return httpx.Client(base_url=url.rstrip("/") + "/admin", headers={"authorization": f"Bearer {key}"}, timeout=30)


def _call(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    try:
        with _client(args) as client:
            answer = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise Failed(f"cannot reach the admin API: {exc}") from None
    try:
        body = answer.json()
    except ValueError:
        raise Failed(f"the admin API answered {answer.status_code} without JSON") from None
    if answer.status_code >= 400:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        raise Failed(f"{answer.status_code} {error.get('code') or ''}: {error.get('message') or body}".strip())
    return body


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".") if value else "0"
    return str(value)


def _table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _show_key(args: argparse.Namespace, key: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(key, indent=2))
        return
    secret = key.pop("key", None)
    print(_table([key], _COLUMNS))
    if secret is not None:
        # The only time the secret exists outside the caller's hands: said plainly, on stdout alone.
        print(f"\nkey: {secret}\nStore it now: the gateway keeps only its digest and cannot show it again.")


def _keys(args: argparse.Namespace) -> None:
    settings = {name: getattr(args, name) for name in _SETTINGS if hasattr(args, name)}
    match args.action:
        case "create":
            body = settings | ({"name": args.name} if hasattr(args, "name") else {})
            _show_key(args, _call(args, "POST", "/keys", json=body))
        case "list":
            listed = _call(args, "GET", "/keys")
            print(json.dumps(listed, indent=2) if args.json else _table(listed["data"], _COLUMNS))
        case "show":
            _show_key(args, _call(args, "GET", f"/keys/{args.name}"))
        case "update":
            if not settings:
                raise Failed("nothing to change: give --models, --rpm, --tpm, --budget-usd, --tenant or --pii")
            _show_key(args, _call(args, "PATCH", f"/keys/{args.name}", json=settings))
        case "rotate":
            _show_key(args, _call(args, "POST", f"/keys/{args.name}/rotate"))
        case "revoke":
            revoked = _call(args, "DELETE", f"/keys/{args.name}")
            print(json.dumps(revoked, indent=2) if args.json else f"revoked: {revoked['name']}")
        case _:
            raise AssertionError(args.action)  # argparse allows only the actions above


def _spend(args: argparse.Namespace) -> None:
    query = {"group_by": args.group_by, "period": args.period, "from": args.start, "to": args.end}
    report = _call(args, "GET", "/spend", params={k: v for k, v in query.items() if v is not None})
    if args.json:
        print(json.dumps(report, indent=2))
        return
    dimensions = tuple(report["group_by"])
    print(f"spend from {report['from']} to {report['to']}" + ("" if report["durable"] else
          " (this ingress process only: no Redis)"))
    print(_table([*report["data"], {dimensions[0]: "TOTAL", **report["total"]}], dimensions + _SPEND_COLUMNS))


def run(args: argparse.Namespace) -> int:
    try:
        (_keys if args.command == "keys" else _spend)(args)
    except (Failed, OSError) as exc:
        print(f"llm-edge: {exc}", file=sys.stderr)
        return 1
    return 0
