"""Settings of the mock provider: simulated latency, failures and stream shape. It answers the public model
name `mock` without a configured route."""

from __future__ import annotations

from typing import ClassVar

from shared.config import ProviderSettings


class MockSettings(ProviderSettings, frozen=True, kw_only=True, tag="mock"):
    latency_ms: float = 0.0
    fail_rate: float = 0.0
    fail_status: int = 500
    stream_chunks: int = 8
    chunk_interval_ms: float = 0.0
    stream_fail_after: int | None = None  # chunks sent before a simulated mid-stream failure

    public_models: ClassVar[tuple[str, ...]] = ("mock",)
