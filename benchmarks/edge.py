"""The edge profile on one core: glass-to-glass latency, CPU per node, peak memory.

    python benchmarks/edge.py [--seconds 20] [--core 0]

Runs configs/edge.yaml with the shipped demo clip as camera and microphone, played in real time
(as a live camera delivers), with every process of the graph pinned to one core (the supervisor's
affinity, inherited by each node: `taskset -c CORE` in effect). Prints the renderer's
glass-to-output latency (now − capture time when a frame is drawn and handed to its outputs),
each node's CPU share of that core over the steady part of the run, its peak resident memory
(VmHWM), and what was dropped. Goal (issue 17): the whole profile in one 2 GHz core, p99 ≤ 100 ms.
State the machine's load beside any figure you quote: another job on the same core doubles them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.proc_stats import status_mib  # noqa: E402
from nodes import NODE_TYPES  # noqa: E402
from pipeline.graph import load_graph  # noqa: E402
from pipeline.supervisor import Supervisor  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--core", type=int, default=0)
    args = ap.parse_args()
    os.sched_setaffinity(0, {args.core})  # every node process inherits it
    clip = ROOT / "demo" / "demo.mp4"
    graph = load_graph(ROOT / "configs" / "edge.yaml", NODE_TYPES, overrides=[
        f"camera.source={clip}", "camera.loop=true", f"microphone.source={clip}", "microphone.loop=true",
        "renderer.web_port=0", "settings.pace=realtime"])
    sup = Supervisor(graph, on_event=lambda text: None)
    sup.start()
    warm_s = 5.0
    deadline = time.monotonic() + warm_s + args.seconds
    start_cpu: dict[str, float] = {}
    t_start = 0.0
    peaks: dict[str, float] = {}
    try:
        while time.monotonic() < deadline and not sup.failure:
            sup.poll(0.2)
            live = {n: p.proc.pid for n, p in sup.nodes.items() if p.proc is not None and p.proc.poll() is None}
            if not start_cpu and sup.epoch_ns and time.monotonic() > deadline - args.seconds:
                start_cpu, t_start = {n: cpu_s(pid) for n, pid in live.items()}, time.monotonic()
            for n, pid in live.items():
                peaks[n] = max(peaks.get(n, 0.0), status_mib(pid, "VmHWM") or 0.0)
        live = {n: p.proc.pid for n, p in sup.nodes.items() if p.proc is not None and p.proc.poll() is None}
        wall = time.monotonic() - t_start
        shares = {n: (cpu_s(pid) - start_cpu.get(n, 0.0)) / wall * 100 for n, pid in live.items()}
        stats = {n: dict(p.stats) for n, p in sup.nodes.items()}
    finally:
        sup.shutdown()
    g2g = stats["renderer"].get("glass_to_output_ms", {})
    load = os.getloadavg()
    print(f"edge profile, one core (#{args.core}), {args.seconds:.0f} s steady after {warm_s:.0f} s warm-up; "
          f"load average {load[0]:.1f} {load[1]:.1f}")
    print(f"glass to output: p50 {g2g.get('p50', float('nan')):.1f} ms, p99 {g2g.get('p99', float('nan')):.1f} ms")
    print(f"{'node':<16} {'CPU %':>6} {'peak MiB':>9}  dropped / lost")
    for n in sorted(shares):
        drops = sum(s.get("dropped", 0) for s in stats[n].get("inputs", {}).values())
        lost = sum(s.get("lost", 0) for s in stats[n].get("inputs", {}).values())
        print(f"{n:<16} {shares[n]:>6.1f} {peaks.get(n, 0):>9.0f}  {drops} / {lost}")
    print(f"{'total':<16} {sum(shares.values()):>6.1f} {sum(peaks.values()):>9.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
