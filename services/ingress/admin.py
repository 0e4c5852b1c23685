"""The admin API, `/admin/...`: API keys at run time (create, list, show, update, rotate, revoke) and spend,
behind the admin key. Off unless `admin.key_sha256` is configured: then every admin path is a 404, as any
unknown path is. `require_admin` is the guard: any admin route depends on it.

A key's secret is generated here, returned once (create, rotate) and stored nowhere: only its digest is.
Keys of the configuration file are listed as read-only; changing one is a 409.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Literal, TypeVar

import msgspec
from fastapi import APIRouter, Depends
from msgspec import UNSET, Meta, Struct, UnsetType
from starlette.requests import Request
from starlette.responses import Response

from services.ingress.auth import digest, presented_key
from services.ingress.context import Call
from services.ingress.edge import EdgeRoute
from services.ingress.gateway import Gateway
from services.ingress.keystore import KeyStore, StoredKey, check_name, not_found
from services.ingress.responses import JSON
from services.ingress.spend import DIMENSIONS, HOUR, Dimension, period_range
from shared.bus.kv import Bucket
from shared.config import ApiKey, PiiMode
from shared.errors import AuthenticationFailed, Conflict, GatewayError, InvalidRequest, NotFound, Unavailable

log = logging.getLogger("llm_edge.ingress.admin")

T = TypeVar("T")
_YEAR_10000 = 253402300800  # unix seconds: what the spend's buckets can name
Positive = Annotated[int, Meta(ge=1)]
Name = Annotated[str, Meta(min_length=1, max_length=256)]


class KeyChanges(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A PATCH body: the fields given change (null: back to none, i.e. every model / no limit / the key's
    own name as tenant); the fields left out stay."""

    models: Annotated[list[Name], Meta(min_length=1)] | None | UnsetType = UNSET
    rpm: Positive | None | UnsetType = UNSET
    tpm: Positive | None | UnsetType = UNSET
    budget_usd: Annotated[float, Meta(ge=0)] | None | UnsetType = UNSET
    tenant: Name | None | UnsetType = UNSET
    pii: PiiMode | None | UnsetType = UNSET  # the key's own PII mode (null: the gateway's default)


class KeyCreate(KeyChanges, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str | UnsetType = UNSET  # generated when left out


class KeyView(Struct, frozen=True, kw_only=True):
    object: str = "api_key"
    name: str
    source: Literal["config", "store"]
    read_only: bool
    models: list[str] | None
    rpm: int | None
    tpm: int | None
    budget_usd: float | None
    tenant: str  # the cache namespace (the key's name unless set)
    pii: str | UnsetType = UNSET  # the key's own PII mode, shown when it has one
    created_at: int | None = None
    updated_at: int | None = None
    rotated_at: int | None = None
    key: str | UnsetType = UNSET  # the secret: in the answers to create and rotate only


class KeyList(Struct, frozen=True, kw_only=True):
    object: str = "list"
    data: list[KeyView]


class Revoked(Struct, frozen=True, kw_only=True):
    object: str = "api_key"
    name: str
    revoked: bool = True


_encode = msgspec.json.Encoder().encode


def view(key: ApiKey, record: StoredKey | None = None, secret: str | UnsetType = UNSET) -> KeyView:
    return KeyView(
        name=key.name, source="config" if record is None else "store", read_only=record is None,
        models=key.models, rpm=key.rpm, tpm=key.tpm, budget_usd=key.budget_usd, tenant=key.namespace,
        pii=UNSET if key.pii is None else key.pii,
        created_at=None if record is None else record.created_at,
        updated_at=None if record is None else record.updated_at,
        rotated_at=None if record is None else record.rotated_at, key=secret,
    )


def reply(body: Struct, status: int = 200) -> Response:
    return Response(_encode(body), status_code=status, media_type=JSON, headers={"cache-control": "no-store"})


def decode(body: bytes, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(body or b"{}", type=kind)
    except msgspec.DecodeError as exc:  # ValidationError included: the message names the field
        raise InvalidRequest(f"Invalid body: {exc}", code="invalid_body") from None


async def require_admin(request: Request) -> None:
    """The admin guard: 404 while no admin key is configured, 401 without the right one."""
    gateway: Gateway = Call.of(request).gateway
    expected = gateway.config.admin.key_sha256
    if expected is None:
        raise NotFound(f"Unknown path: {request.method} {request.url.path}", code="not_found")
    key = presented_key(request.headers)
    if key is None:
        raise AuthenticationFailed("The admin API needs the admin key (Authorization: Bearer ADMIN_KEY).")
    if not hmac.compare_digest(digest(key), expected):
        raise AuthenticationFailed("Incorrect admin key provided.")


def start(gateway: Gateway) -> asyncio.Task[None] | None:
    """With the admin API on: open the key store and follow it (the task runs until cancelled)."""
    if gateway.config.admin.key_sha256 is None or gateway.keyring is None:
        return None
    bucket = Bucket(gateway.bus(), gateway.subjects.keys_bucket, 0, timeout=1.0,
                    replicas=gateway.config.jetstream_replicas)
    store = gateway.keyring.store = KeyStore(bucket)
    return asyncio.get_running_loop().create_task(store.follow(gateway.keyring.apply, gateway.keyring.changed))


def _store(gateway: Gateway) -> KeyStore:
    if gateway.keyring is None or gateway.keyring.store is None:
        raise Unavailable("The key store is not open yet.", code="store_unavailable")
    return gateway.keyring.store


def _changed(gateway: Gateway, changes: KeyChanges) -> Callable[[ApiKey], ApiKey]:
    if isinstance(changes.models, list):
        for model in changes.models:
            try:
                gateway.routes.resolve(model)
            except GatewayError:
                raise InvalidRequest(f"`models`: the gateway serves no model named `{model}`.",
                                     param="models", code="model_not_found") from None
    fields = {f: getattr(changes, f) for f in KeyChanges.__struct_fields__ if getattr(changes, f) is not UNSET}
    return lambda key: msgspec.structs.replace(key, **fields)


def _instant(value: str, param: str) -> int:
    """Unix seconds, an ISO 8601 date (`2026-11-01`: its start) or date-time (UTC unless it says otherwise)."""
    wrong = InvalidRequest(f"`{param}` is unix seconds or an ISO 8601 date or date-time, from 1970 to 9999.",
                           param=param)
    if value.isdecimal():
        seconds = int(value)
    else:
        try:
            at = datetime.fromisoformat(value)
        except ValueError:
            raise wrong from None
        seconds = int((at if at.tzinfo is not None else at.replace(tzinfo=UTC)).timestamp())
    if not 0 <= seconds < _YEAR_10000:
        raise wrong
    return seconds


def spend_range(period: str | None, start: str | None, end: str | None) -> tuple[int, int]:
    """The hours to sum: a named period, or from/to (widened to whole hours); this month by default."""
    if start is None and end is None:
        return period_range(period or "month", time.time())
    if period is not None or start is None or end is None:
        raise InvalidRequest("Give `period`, or both `from` and `to`.", param="period")
    first, last = _instant(start, "from"), _instant(end, "to")
    return first // HOUR * HOUR, -(-last // HOUR) * HOUR


def dimensions(value: str) -> tuple[Dimension, ...]:
    wanted = tuple(part.strip() for part in value.split(",") if part.strip())
    known: list[Dimension] = [d for d in DIMENSIONS if d in wanted]
    if not wanted or len(known) != len(wanted) or len(set(wanted)) != len(wanted):
        raise InvalidRequest("`group_by` is one or more of key, tenant, model (comma-separated).", param="group_by")
    return tuple(sorted(known, key=wanted.index))


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = Call.of(request).gateway
    assert gateway.keyring is not None  # an admin key makes a keyring
    return gateway


def _writable(gateway: Gateway, name: str) -> KeyStore:
    assert gateway.keyring is not None
    if name in gateway.keyring.configured:
        raise Conflict(f"The key '{name}' is defined in the configuration file and is read-only here; change it "
                       "there.", code="key_read_only")
    return _store(gateway)


async def list_keys(request: Request) -> Response:
    gateway = _gateway(request)
    assert gateway.keyring is not None
    configured = [view(key) for key in gateway.keyring.configured.values()]
    stored = [view(record.key, record) for record in await _store(gateway).list()]
    return reply(KeyList(data=configured + stored))


async def create_key(request: Request) -> Response:
    gateway = _gateway(request)
    assert gateway.keyring is not None
    body = decode(await request.body(), KeyCreate)
    name = check_name(body.name) if isinstance(body.name, str) else f"key-{secrets.token_hex(4)}"
    if name in gateway.keyring.configured:
        raise Conflict(f"The configuration file has a key named '{name}'.", param="name", code="key_exists")
    key = _changed(gateway, body)(ApiKey(name=name, sha256=""))
    try:
        record, secret = await _store(gateway).create(key)
    except Conflict:
        raise Conflict(f"A key named '{name}' exists already.", param="name", code="key_exists") from None
    log.info("admin: key '%s' created", name)
    return reply(view(record.key, record, secret), 201)


async def show_key(request: Request, name: str) -> Response:
    gateway = _gateway(request)
    assert gateway.keyring is not None
    if (configured := gateway.keyring.configured.get(name)) is not None:
        return reply(view(configured))
    found = await _store(gateway).get(name)
    if found is None:
        raise not_found(name)
    return reply(view(found[0].key, found[0]))


async def update_key(request: Request, name: str) -> Response:
    gateway = _gateway(request)
    store = _writable(gateway, name)
    record = await store.update(name, _changed(gateway, decode(await request.body(), KeyChanges)))
    log.info("admin: key '%s' updated", name)
    return reply(view(record.key, record))


async def rotate_key(request: Request, name: str) -> Response:
    gateway = _gateway(request)
    record, secret = await _writable(gateway, name).rotate(name)
    log.info("admin: key '%s' rotated", name)
    return reply(view(record.key, record, secret))


async def revoke_key(request: Request, name: str) -> Response:
    gateway = _gateway(request)
    record = await _writable(gateway, name).revoke(name)
    log.info("admin: key '%s' revoked", name)
    return reply(Revoked(name=record.key.name))


async def spend(request: Request, group_by: str = "key", period: str | None = None) -> Response:
    gateway: Gateway = Call.of(request).gateway
    query = request.query_params
    start, end = spend_range(period, query.get("from"), query.get("to"))
    return reply(await gateway.spend.report(start, end, dimensions(group_by)))


def _router() -> APIRouter:
    """Every admin route, behind `require_admin`."""
    admin = APIRouter(prefix="/admin", dependencies=[Depends(require_admin)], include_in_schema=False,
                      route_class=EdgeRoute, tags=["admin"])
    admin.add_api_route("/keys", list_keys, methods=["GET"])
    admin.add_api_route("/keys", create_key, methods=["POST"])
    admin.add_api_route("/keys/{name}", show_key, methods=["GET"])
    admin.add_api_route("/keys/{name}", update_key, methods=["PATCH"])
    admin.add_api_route("/keys/{name}", revoke_key, methods=["DELETE"])
    admin.add_api_route("/keys/{name}/rotate", rotate_key, methods=["POST"])
    admin.add_api_route("/spend", spend, methods=["GET"])
    return admin


router = _router()
