"""Process helpers for bench/compare.py: free ports, process trees found through /proc and their RSS."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from llm_edge.launcher import free_port as free_port  # re-exported for compare.py

# --- processes ---------------------------------------------------------------------------------------


def _stat(pid: int | str) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: [state, ppid, …]; None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants, found through /proc (children that called setsid included)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (stat := _stat(entry.name)) is not None:
            children.setdefault(int(stat[1]), []).append(int(entry.name))
    found, queue = [], [root]
    while queue:
        pid = queue.pop()
        found.append(pid)
        queue.extend(children.get(pid, ()))
    return found


def started_at(pid: int) -> str | None:
    stat = _stat(pid)
    return None if stat is None else stat[19]  # field 22, the start time: tells a reused pid apart


def _role(pid: int, name: str) -> str:
    """A short name for a process: our services by their subcommand, Python workers as such."""
    if not name.startswith("python"):
        return name
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return name
    if "llm_edge.cli" in argv:
        return " ".join(argv[argv.index("llm_edge.cli") + 1 :]).strip()
    if any("multiprocessing" in arg for arg in argv):
        return "python worker"
    return Path(argv[1]).name if len(argv) > 1 and argv[1] else name


def tree_rss(root: int) -> dict[str, Any]:
    """VmRSS of every process in the tree: total MiB and MiB by process role."""
    by_name: dict[str, float] = {}
    count = 0
    for pid in process_tree(root):
        try:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        except (OSError, ValueError):
            continue
        if "VmRSS" not in fields:  # a zombie
            continue
        mib = int(fields["VmRSS"].split()[0]) / 1024
        name = _role(pid, fields["Name"].strip())
        by_name[name] = by_name.get(name, 0.0) + mib
        count += 1
    return {"mib": round(sum(by_name.values()), 1), "processes": count,
            "by_name": {k: round(v, 1) for k, v in sorted(by_name.items())}}


class Sampler(threading.Thread):
    """Samples a process tree's RSS every 0.25 s while a load runs; keeps the largest total."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root, self.peak = root, {"mib": 0.0, "processes": 0, "by_name": {}}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.25):
            sample = tree_rss(self.root)
            if sample["mib"] > self.peak["mib"]:
                self.peak = sample
