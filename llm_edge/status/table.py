"""The human view of a `Topology`: services grouped with their instances, then the server's numbers."""

from __future__ import annotations

from collections.abc import Sequence

from llm_edge.status.monitor import ServerStatus
from llm_edge.status.topology import Topology

LAST_ERROR_WIDTH = 40
SHORT_ID = 8  # the tail of a NUID; its head is shared by every id one client generates


def render(topology: Topology) -> str:
    when = topology.collected_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [f"LLM Edge status  {topology.nats_url}  {when}", ""]
    lines += _services(topology)
    if topology.unreadable_replies:
        lines.append(f"({topology.unreadable_replies} $SRV replies could not be read)")
    lines.append("")
    if topology.server is not None:
        lines += _server(topology.server)
    elif topology.monitor_error:
        lines.append(f"nats-server monitoring unavailable: {topology.monitor_error}")
    return "\n".join(lines) + "\n"


def _services(topology: Topology) -> list[str]:
    if not topology.services:
        return [f"no service instance answered within {topology.window_seconds:g}s"]
    rows: list[tuple[str, ...]] = []
    for service in topology.services:
        count = len(service.instances)
        label = f"{service.name} ({count} instance{'s' if count != 1 else ''})"
        for index, instance in enumerate(service.instances):
            rows.append((
                label if index == 0 else "",
                instance.id[-SHORT_ID:],
                instance.version,
                " ".join(e.name for e in instance.endpoints) or "-",
                f"{instance.num_requests:,}",
                f"{instance.num_errors:,}",
                f"{instance.average_processing_time_ms:.2f}",
                _truncate(instance.last_error) or "-",
            ))
    headers = ("SERVICE", "INSTANCE", "VERSION", "ENDPOINTS", "REQUESTS", "ERRORS", "AVG MS", "LAST ERROR")
    return _grid([headers, *rows], right={4, 5, 6})


def _server(server: ServerStatus) -> list[str]:
    facts = [
        ("connections", f"{server.connections} ({server.total_connections} since start)",
         "subscriptions", f"{server.subscriptions:,}"),
        ("msgs in", f"{server.in_msgs:,}{_rate(server.in_msgs_per_second)}",
         "msgs out", f"{server.out_msgs:,}{_rate(server.out_msgs_per_second)}"),
        ("bytes in", _bytes(server.in_bytes), "bytes out", _bytes(server.out_bytes)),
        ("slow consumers", str(server.slow_consumers),
         "cpu / mem", f"{server.cpu_percent:.1f}% / {_bytes(server.mem_bytes)}"),
    ]
    connections = [
        (c.name or "-", str(c.cid), _bytes(c.pending_bytes), f"{c.in_msgs:,}", f"{c.out_msgs:,}",
         str(c.subscriptions))
        for c in server.connection_list
    ]
    return [
        f"nats-server {server.version}  up {server.uptime}  ({server.monitor_url})",
        *("  " + line for line in _grid(facts, right=set())),
        "",
        *_grid([("CONNECTION", "CID", "PENDING", "IN MSGS", "OUT MSGS", "SUBS"), *connections],
               right={1, 2, 3, 4, 5}),
    ]


def _grid(rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    """Rows of cells as aligned text columns (the first row is usually the headers)."""
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = (cell.rjust(width) if i in right else cell.ljust(width)
                  for i, (cell, width) in enumerate(zip(cells, widths, strict=True)))
        return "  ".join(padded).rstrip()

    return [line(row) for row in rows]


def _truncate(text: str) -> str:
    text = " ".join(text.split())  # one line, whatever the error said
    return text if len(text) <= LAST_ERROR_WIDTH else text[: LAST_ERROR_WIDTH - 1] + "…"


def _rate(per_second: float | None) -> str:
    return "" if per_second is None else f" ({per_second:,.1f}/s)"


def _bytes(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    size = count / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
