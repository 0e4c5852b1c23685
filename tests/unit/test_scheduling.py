"""`runtime.batch_scheduling`: SCHED_BATCH by default, inherited by what the process starts; the default
policy kept when `LLM_EDGE_SCHEDULING=normal`. Each case in a process of its own (a policy, once set,
stays with the process)."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = (
    "import os, subprocess, sys\n"
    "from shared import runtime\n"
    "os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))  # whatever the test runner had\n"
    "runtime.batch_scheduling()\n"
    "child = subprocess.run([sys.executable, '-c', 'import os; print(os.sched_getscheduler(0))'],\n"
    "                       capture_output=True, text=True, check=True)\n"
    "print(os.sched_getscheduler(0), child.stdout.strip())\n"
)


def policies(**env: str) -> list[int]:
    """The probe's own policy and its child's."""
    environment = {k: v for k, v in os.environ.items() if k != "LLM_EDGE_SCHEDULING"} | env
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                          env=environment)
    return [int(value) for value in done.stdout.split()]


def test_batch_by_default_and_inherited() -> None:
    assert policies() == [os.SCHED_BATCH, os.SCHED_BATCH]


def test_normal_keeps_the_default_policy() -> None:
    assert policies(LLM_EDGE_SCHEDULING="normal") == [os.SCHED_OTHER, os.SCHED_OTHER]
