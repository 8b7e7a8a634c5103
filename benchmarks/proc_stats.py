"""Small helpers the graph benchmarks share: a graph run in the background, waiting on a condition, and a
process's memory from /proc."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from pipeline.graph import GraphSpec
from pipeline.supervisor import Supervisor


def run_in_background(graph: GraphSpec) -> tuple[Supervisor, list[str], list[int], threading.Thread]:
    """Start ``graph``'s supervisor and run it in a daemon thread, as a benchmark drives a graph while it
    watches, kills or stops its nodes: (the supervisor, its events as they come, its exit code once
    ``run`` returns — empty before —, the thread)."""
    events: list[str] = []
    sup = Supervisor(graph, on_event=events.append)
    sup.start()
    code: list[int] = []
    thread = threading.Thread(target=lambda: code.append(sup.run()), daemon=True)
    thread.start()
    return sup, events, code, thread


def wait_for(predicate, timeout_s: float, step_s: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return False


def status_mib(pid: int, key: str = "VmRSS") -> float | None:
    """A memory line of /proc/PID/status (``VmRSS`` now, ``VmHWM`` the peak) in MiB; None when the
    process is gone or the line is missing."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None
