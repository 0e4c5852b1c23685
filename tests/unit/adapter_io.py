"""What the provider adapter tests read and send: the transcribed fixtures, and client bodies decoded as
the ingress decodes them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from shared.messages import ChatRequest

FIXTURES = Path(__file__).parent.parent / "fixtures"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def request(body: dict[str, Any] | bytes) -> ChatRequest:
    """A client body decoded the way the ingress decodes it."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return msgspec.json.decode(raw, type=ChatRequest)
