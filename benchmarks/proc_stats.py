"""Small helpers the graph benchmarks share: waiting on a condition, and a process's memory from /proc."""

from __future__ import annotations

import time
from pathlib import Path


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
