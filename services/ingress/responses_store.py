"""Stored responses (`store: true`): each Response object with its input items, in a JetStream key-value
bucket every ingress replica shares, under a key that starts with a digest of the tenant, so a tenant can
neither read nor name another tenant's responses. `previous_response_id` walks the chain back from there.
"""

from __future__ import annotations

import hashlib
import logging
import re

import msgspec
from msgspec import UNSET, Struct

from services.ingress.responses_dialect import Turn, items_of, new_id
from services.ingress.responses_items import Item, stored_form
from shared.bus.kv import Bucket
from shared.errors import NotFound

log = logging.getLogger("llm_edge.ingress.responses")

_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
MAX_CHAIN = 1000  # responses walked back through `previous_response_id`; a cycle cannot exist, a bound anyway


class Stored(Struct, frozen=True, kw_only=True):
    response: bytes  # the Response object's JSON, exactly as it was returned
    input_items: bytes  # this request's input items (ids added), JSON
    previous_response_id: str | None = None


class _Output(Struct):
    output: list[Item]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Stored)
_output = msgspec.json.Decoder(_Output)
_json = msgspec.json.Encoder()


def not_found(response_id: str, param: str | None = None) -> NotFound:
    return NotFound(f"No response found with id '{response_id}'.", param=param, code="response_not_found")


class ResponseStore:
    def __init__(self, bucket: Bucket) -> None:
        self.bucket = bucket

    @staticmethod
    def key(tenant: str, response_id: str) -> str:
        return f"{hashlib.sha256(tenant.encode()).hexdigest()[:32]}.{response_id}"

    async def load(self, tenant: str, response_id: str) -> Stored | None:
        if not _ID.match(response_id):
            return None
        value = await self.bucket.get(self.key(tenant, response_id))
        return None if value is None else _decoder.decode(value)

    async def save(self, tenant: str, turn: Turn, response: bytes) -> None:
        items = [stored_form(item, new_id("msg" if item.type in ("message", UNSET) else "item")) for item in turn.items]
        previous = turn.request.previous_response_id
        record = Stored(response=response, input_items=_json.encode(items),
                        previous_response_id=previous if isinstance(previous, str) else None)
        await self.bucket.put(self.key(tenant, turn.id), _encoder.encode(record))

    async def delete(self, tenant: str, response_id: str) -> bool:
        if await self.load(tenant, response_id) is None:
            return False
        await self.bucket.delete(self.key(tenant, response_id))
        return True

    async def history(self, tenant: str, previous_id: str) -> list[Item]:
        """The conversation up to and including the response `previous_id`: every input and output item of
        its chain, oldest first. 404 when it does not exist for this tenant (expired, deleted, another's)."""
        chain: list[Stored] = []
        response_id: str | None = previous_id
        while response_id is not None and len(chain) < MAX_CHAIN:
            stored = await self.load(tenant, response_id)
            if stored is None:
                if not chain:
                    raise not_found(previous_id, "previous_response_id")
                log.warning("response %s of a conversation has expired; the conversation continues without it",
                            response_id)
                break
            chain.append(stored)
            response_id = stored.previous_response_id
        items: list[Item] = []
        for stored in reversed(chain):
            items += items_of(stored.input_items)
            items += _output.decode(stored.response).output
        return items


class _Page(Struct, kw_only=True):
    data: list[Item]
    first_id: str | None
    last_id: str | None
    has_more: bool
    object: str = "list"


def item_page(stored: Stored, order: str, limit: int, after: str | None) -> bytes:
    """`GET /v1/responses/{id}/input_items`: OpenAI's list page, newest first unless `order=asc`."""
    items = items_of(stored.input_items)
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [item.id for item in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    page = items[:limit]
    first = page[0].id if page and isinstance(page[0].id, str) else None
    last = page[-1].id if page and isinstance(page[-1].id, str) else None
    return _json.encode(_Page(data=page, first_id=first, last_id=last, has_more=len(items) > limit))
