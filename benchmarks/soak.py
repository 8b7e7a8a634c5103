"""A soak: the demo graph in real time for minutes; does any node's resident memory keep growing (issue 15)?

    python benchmarks/soak.py [--minutes 10] [--config configs/demo.yaml] [--limit-pct 5]

Runs the graph on the shipped clip, looping (camera and microphone ``loop: true``), played in real
time (``settings.pace=realtime``, as a live camera and microphone deliver), with its MP4 and WAVs in
out/soak/ and the nodes' log in out/soak/nodes.log. Every 10 s from the graph's start it reads each
node process's VmRSS (/proc/PID/status). At the end it prints, per node: the RSS at the start of the
growth window (minute 2 of 10: 20 % of the run, so that model loading, allocator warm-up and the
queues' first fill are behind it), at the end, the growth in MiB and %, the largest sample, each
node's RSS minute by minute, what its inputs dropped and lost, and the load average.

Growth is measured floor to floor: from the lowest sample of the window's first minute to the lowest of
the run's last minute. A node's RSS swings with what its pipes and queues hold at the moment, within
its byte budgets (the camera keeps up to 32 MiB of frames for each reader that is behind, and a loaded
machine makes readers fall behind), so one sample at each end would call a full pipe at the end a
leak; a leak raises the floor. The single samples at the window's start and the end are printed too.

Exit 1 if any node's floor grew by more than ``--limit-pct`` (5 %), or a node restarted (a new process
starts small, so its growth says nothing), or the graph did not run; else 0.
State the machine's load beside any figure: it is printed at the start, every minute and the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.proc_stats import run_in_background, status_mib  # noqa: E402
from nodes import NODE_TYPES  # noqa: E402
from pipeline.graph import load_graph  # noqa: E402

SAMPLE_S = 10.0
WINDOW_FROM = 0.2  # the growth window starts at 20 % of the run: minute 2 of 10
FLOOR_S = 60.0  # each end's floor: the lowest sample over this long


def load_text() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    ap.add_argument("--limit-pct", type=float, default=5.0, help="most growth allowed per node in the window")
    ap.add_argument("--out", default=str(ROOT / "out" / "soak"))
    args = ap.parse_args()

    run_s = args.minutes * 60
    window_s = WINDOW_FROM * run_s
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    clip = ROOT / "demo" / "demo.mp4"
    graph = load_graph(Path(args.config), NODE_TYPES, overrides=[
        f"camera.source={clip}", "camera.loop=true", f"microphone.source={clip}", "microphone.loop=true",
        f"renderer.mp4_path={out / 'demo.mp4'}", f"renderer.wav_dir={out / 'voices'}", "renderer.web_port=0",
        "settings.pace=realtime"])
    print(f"{args.config}: {len(graph.nodes)} nodes, real time, looping {clip.name}, {args.minutes:g} min; "
          f"growth window from {window_s / 60:g} min to the end; load average {load_text()} on {os.cpu_count()} cores",
          flush=True)

    # the nodes inherit stderr: their log goes to a file
    log_path = out / "nodes.log"
    saved_stderr = os.dup(2)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(log_fd, 2)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))  # stop the graph on the way out, as Ctrl-C does
    sup, events, code, thread = run_in_background(graph)
    #: node → [(seconds since the graph's start, pid, RSS MiB)]
    samples: dict[str, list[tuple[float, int, float]]] = {name: [] for name in sup.nodes}
    loads: list[tuple[float, float]] = []  # (minute, 1-min load average)
    started = False
    try:
        deadline = time.monotonic() + 240
        while not (sup.epoch_ns and all(n.state == "running" for n in sup.nodes.values())):
            if sup.failure or not thread.is_alive() or time.monotonic() > deadline:
                print("the graph did not get going:", sup.failure, *events[-10:], sep="\n  ")
                return 1
            time.sleep(0.1)
        started = True
        t0 = time.monotonic()
        print(f"graph running; sampling VmRSS every {SAMPLE_S:g} s", flush=True)
        tick = 0
        while tick * SAMPLE_S <= run_s + 1e-6:
            time.sleep(max(0.0, t0 + tick * SAMPLE_S - time.monotonic()))
            if not thread.is_alive():
                print(f"the supervisor stopped at {time.monotonic() - t0:.0f} s: {sup.failure}")
                break
            t = time.monotonic() - t0
            for name, node in list(sup.nodes.items()):
                proc = node.proc
                if proc is not None and proc.poll() is None and (rss := status_mib(proc.pid)) is not None:
                    samples[name].append((t, proc.pid, rss))
            if tick % round(60 / SAMPLE_S) == 0:
                loads.append((t / 60, os.getloadavg()[0]))
                if tick:
                    total = sum(s[-1][2] for s in samples.values() if s)
                    print(f"  {t / 60:4.1f} min: {total:.0f} MiB resident in all; load average {load_text()}",
                          flush=True)
            tick += 1
    finally:
        sup.stop()
        thread.join(90)
        os.dup2(saved_stderr, 2)
        os.close(log_fd)
    if not started:
        return 1

    print(f"\nload average at the end: {load_text()} on {os.cpu_count()} cores "
          f"(1-min, each minute: {' '.join(f'{v:.1f}' for _, v in loads)})")
    print(f"\nresident memory per node (MiB, VmRSS every {SAMPLE_S:g} s); window {window_s / 60:g} min → end; "
          f"limit +{args.limit_pct:g} %")
    print(f"{'node':<15} {'at ' + f'{window_s / 60:g} min':>9} {'end':>7} {'floor at':>9} {'floor end':>9} "
          f"{'growth':>8} {'%':>7} {'max':>7}  {'dropped / lost':<16} verdict (growth: floor to floor)")
    failed: list[str] = []
    for name in sup.nodes:
        s = samples[name]
        stats = sup.nodes[name].stats.get("inputs", {})
        dropped = sum(x.get("dropped", 0) for x in stats.values())
        lost = sum(x.get("lost", 0) for x in stats.values())
        counts = f"{dropped} / {lost}"
        if not s or s[-1][0] < run_s - SAMPLE_S:
            print(f"{name:<15} {'—':>9} {'—':>7} {'—':>8} {'—':>7} {'—':>7}  {counts:<16} FAIL: not running to the end")
            failed.append(name)
            continue
        at = min(s, key=lambda x: abs(x[0] - window_s))
        end = s[-1]
        floor_at = min([x[2] for x in s if window_s <= x[0] < window_s + FLOOR_S] or [at[2]])
        floor_end = min(x[2] for x in s if x[0] >= end[0] - FLOOR_S)
        growth = floor_end - floor_at
        pct = growth / floor_at * 100
        restarted = len({pid for _, pid, _ in s}) > 1 or sup.nodes[name].restarts
        verdict = "FAIL: restarted" if restarted else (f"FAIL: > {args.limit_pct:g} %" if pct > args.limit_pct else "ok")
        if verdict != "ok":
            failed.append(name)
        print(f"{name:<15} {at[2]:9.1f} {end[2]:7.1f} {floor_at:9.1f} {floor_end:9.1f} {growth:+8.1f} {pct:+6.1f}% "
              f"{max(x[2] for x in s):7.1f}  {counts:<16} {verdict}")
    total_at = sum(min(s, key=lambda x: abs(x[0] - window_s))[2] for s in samples.values() if s)
    total_end = sum(s[-1][2] for s in samples.values() if s)
    print(f"{'total':<15} {total_at:9.1f} {total_end:7.1f} {total_end - total_at:+8.1f}")

    minutes = range(int(args.minutes) + 1) if args.minutes >= 2 else None
    print("\nper node, each " + ("minute" if minutes else f"{SAMPLE_S:g} s") + " (MiB):")
    for name, s in samples.items():
        if minutes:
            row = [min(s, key=lambda x: abs(x[0] - m * 60))[2] if s else float("nan") for m in minutes]
        else:
            row = [x[2] for x in s]
        print(f"  {name:<15} {' '.join(f'{v:6.1f}' for v in row)}")

    print("\ninputs' dropped / lost, per input (whole run):")
    for name, node in sup.nodes.items():
        for port, x in node.stats.get("inputs", {}).items():
            if x.get("dropped") or x.get("lost") or x.get("gap_samples"):
                print(f"  {name + '.' + port:<24} dropped {x.get('dropped', 0)}, lost {x.get('lost', 0)}"
                      + (f", gap {x['gap_samples']} samples" if x.get("gap_samples") else ""))
    lines = log_path.read_text(errors="replace").splitlines()
    warnings = [line for line in lines if " WARNING " in line or " ERROR " in line]
    print(f"\nthe nodes' warnings and errors: {len(warnings)} of {len(lines)} log lines ({log_path})")
    for line in warnings[:10]:
        print(f"  {line[:300]}")
    print("\nwhat each node said at the end:")
    for line in sup.summary():
        print(f"  {line[:300]}")
    print(f"supervisor: exit {code[0] if code else '?'} (130: stopped by this script)")
    if failed:
        print(f"\nFAIL: {', '.join(failed)}")
        return 1
    print(f"\nOK: no node's floor grew more than {args.limit_pct:g} % from {window_s / 60:g} min to the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
