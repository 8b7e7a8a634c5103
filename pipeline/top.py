"""``launch.py top``: a live per-node table built from the supervisor's telemetry."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import zmq

from pipeline.messages import Heartbeat, MessageError, decode
from pipeline.runner import telemetry_endpoints
from pipeline.supervisor import run_base_dir


def newest_live_run() -> Path | None:
    runs = []
    base = run_base_dir()
    for pid_file in base.glob("*/supervisor.pid") if base.exists() else []:
        try:
            os.kill(int(pid_file.read_text()), 0)
        except (OSError, ValueError):
            continue
        runs.append(pid_file.parent)
    return max(runs, key=lambda p: p.stat().st_mtime, default=None)


def format_table(beats: dict[str, tuple[str, dict[str, Any]]]) -> str:
    rows = [f"{'node':<14} {'state':<9} {'in':>7} {'out':>7} {'drop':>6} {'lost':>6} {'bad':>5} {'err':>5} "
            f"{'compute p50/p99 ms':>19} {'latency p50/p99 ms':>19}"]
    for name, (state, s) in sorted(beats.items()):
        ins = s.get("inputs", {}).values()
        received = sum(i.get("received", 0) for i in ins)
        sent = sum(o.get("sent", 0) for o in s.get("outputs", {}).values())
        compute = s.get("compute_ms", {})
        worst = max((i.get("latency_ms", {}) for i in ins), key=lambda l: l.get("p50", 0), default={})
        rows.append(
            f"{name:<14} {state:<9} {received:>7} {sent:>7} {sum(i.get('dropped', 0) for i in ins):>6} "
            f"{sum(i.get('lost', 0) for i in ins):>6} {sum(i.get('bad', 0) for i in ins):>5} "
            f"{s.get('counters', {}).get('errors', 0):>5} "
            f"{_pair(compute):>19} {_pair(worst):>19}")
    return "\n".join(rows)


def _pair(summary: dict[str, float]) -> str:
    return f"{summary['p50']:.1f}/{summary['p99']:.1f}" if summary else "-"


def watch(run_dir: str | None, once: bool = False, interval_s: float = 1.0) -> int:
    path = Path(run_dir) if run_dir else newest_live_run()
    if path is None or not (path / "supervisor.pid").exists():
        print(f"error: no running graph found under {run_base_dir()} (start one with `python launch.py`)",
              file=sys.stderr)
        return 2
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"Heartbeat")
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(telemetry_endpoints(path)[1])
    beats: dict[str, tuple[str, dict[str, Any]]] = {}
    try:
        while True:
            deadline = time.monotonic() + max(interval_s, 1.5 if once else 0)
            while (left := deadline - time.monotonic()) > 0:
                if sock.poll(int(left * 1000)):
                    try:
                        beat = decode(sock.recv_multipart())
                    except MessageError:
                        continue
                    if isinstance(beat, Heartbeat):
                        beats[beat.node] = (beat.state, beat.stats)
            table = format_table(beats)
            if once:
                print(table)
                return 0 if beats else 1
            print("\033[2J\033[H" + f"earshot top — {path}\n" + table, flush=True)
    except KeyboardInterrupt:
        return 0
    finally:
        sock.close()
        ctx.term()
