"""Kill -9 each node of the demo graph in turn: how soon its output comes back, what its readers
count as lost, and whether the run still ends with one playable MP4 (issue 15).

    python benchmarks/kill_nodes.py [--config configs/demo.yaml] [--settle-s 4] [--nodes camera,renderer]

Runs the graph on the shipped clip, looping, played in real time (as a live camera delivers), with
its MP4 and WAVs in out/kill_nodes/. Once every node is running it SIGKILLs one node (the pid the
supervisor started), waits for the supervisor to restart it and for its output to flow again, lets
the graph settle, and goes on to the next. Per node it prints:

* resumed: from the kill to the first output of the new process (a node without outputs, the
  renderer: the first input it took), as seen in the heartbeats, so within ``heartbeat_s`` (0.2 s).
  Goal: ≤ 2 s. Split into: spawned (the supervisor noticed the death, at once: it wakes on the
  process's exit, and a first restart in the window has no backoff), ready (the process forked from
  the supervisor's fork server, which imported the runtime once: the node's own imports, its ``open()``
  loading its models, the handshake) and first output (told in a heartbeat at once);
* lost downstream: what each reader of its outputs counted as ``lost`` meanwhile (sequence gaps:
  what the dead process never sent, at the rate it sent before), read once every reader's count
  moved (a renderer behind real time reports a few seconds late) or after 15 s;

and at the end whether the MP4 is one file that decodes and spans the run: from the graph's start to
where the renderer had got when the graph was stopped (a renderer slower than real time has a
backlog then, which it does not write), with frames from before and after the renderer's own kill,
no hole longer than the renderer's restart plus what it had not written when killed (its backlog,
the encoder's queue, the last fragment: up to ~3 s on a loaded machine), and its audio gapless to
the same end. State the
machine's load beside any figure.
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

from benchmarks.proc_stats import run_in_background, wait_for  # noqa: E402
from nodes import NODE_TYPES  # noqa: E402
from pipeline.graph import load_graph  # noqa: E402
from pipeline.supervisor import Supervisor  # noqa: E402


def produced(stats: dict) -> int:
    """What a node's process did so far: messages sent, or for a sink, inputs it took."""
    sent = sum(out.get("sent", 0) for out in stats.get("outputs", {}).values())
    return sent if stats.get("outputs") else sum(i.get("delivered", 0) for i in stats.get("inputs", {}).values())


def readers_of(graph, name: str) -> list[tuple[str, str]]:
    """(node, input port) of every input fed by ``name``."""
    return [(n, port) for n, spec in graph.nodes.items() for port, c in spec.inputs.items() if c.from_node == name]


def lost(sup: Supervisor, node: str, port: str) -> int:
    return sup.nodes[node].stats.get("inputs", {}).get(port, {}).get("lost", 0)


def check_mp4(path: Path, wall_s: float, renderer_killed_s: float | None, renderer_down_s: float) -> list[str]:
    import av

    lines = []
    parts = path.parent / f".{path.name}.parts"
    others = sorted(p.name for p in path.parent.glob("*.mp4"))
    left = f"; parts left in {parts}" if parts.exists() else "; no parts left"
    lines.append(f"files: {', '.join(others) or 'none'}{left}")
    if not path.exists():
        return [*lines, f"FAIL: {path} was not written"]
    try:
        with av.open(str(path)) as container:
            times = [f.time for f in container.decode(video=0)]
        with av.open(str(path)) as container:
            rate = container.streams.audio[0].rate if container.streams.audio else 0
            samples = sum(f.samples for f in container.decode(audio=0)) if rate else 0
    except Exception as exc:  # noqa: BLE001 - whatever stops a decode is the answer here
        return [*lines, f"FAIL: {path} does not decode: {exc}"]
    video_s = times[-1] + (times[-1] - times[-2] if len(times) > 1 else 0) if times else 0.0
    audio_s = samples / rate if rate else 0.0
    lines.append(f"{path}: {len(times)} frames, video {times[0] if times else 0:.2f}–{video_s:.2f} s, "
                 f"mixture {audio_s:.2f} s; the run's wall time {wall_s:.2f} s "
                 f"(video covers {100 * video_s / wall_s:.0f} %)")
    # a renderer slower than real time is behind when stopped, its audio queue more than its video one
    # (it takes one message per input in turn): what it had not got to is not written
    checks = {"starts at the run's start": bool(times) and times[0] < 1.0,
              "video ends within 5 s of the stop": wall_s - 5.0 < video_s <= wall_s + 1.0,
              "audio ends within 5 s of the stop": wall_s - 5.0 < audio_s <= wall_s + 1.0}
    if renderer_killed_s is not None:
        before = sum(t < renderer_killed_s for t in times)
        lines.append(f"frames before the renderer's kill at {renderer_killed_s:.1f} s: {before}, "
                     f"after: {len(times) - before}; longest gap {max(b - a for a, b in zip(times, times[1:])):.2f} s")
        checks["frames from both of the renderer's processes"] = 0 < before < len(times)
        # the hole at the renderer's own kill: its restart, and what the killed process had not made
        # durable: its backlog (up to its 2 s video queue), the encoder's queue and the last fragment
        gap = max(b - a for a, b in zip(times, times[1:]))
        checks[f"no hole longer than the renderer's restart ({renderer_down_s:.1f} s) + 4 s"] = gap < renderer_down_s + 4
    failed = [name for name, ok in checks.items() if not ok]
    lines.append("OK: one playable MP4 covering the run" if not failed else f"FAIL: {'; '.join(failed)}")
    return lines


def describe_wav(path: Path, wall_s: float) -> str:
    """A voice's WAV: its length against the run's, and its silent stretches over 1 s (a voice may
    be silent; one while its nodes were down is expected, one to the end of the run is not)."""
    import numpy as np
    import soundfile as sf

    samples, rate = sf.read(str(path), dtype="float32")
    tenths = np.abs(samples[: len(samples) // (rate // 10) * (rate // 10)]).reshape(-1, rate // 10).max(axis=1)
    silent, stretches, start = tenths < 1e-5, [], None
    for i, quiet in enumerate([*silent, False]):
        if quiet and start is None:
            start = i
        elif not quiet and start is not None:
            if i - start > 10:
                stretches.append(f"{start / 10:.1f}–{i / 10:.1f} s")
            start = None
    return (f"{path}: {len(samples) / rate:.2f} s of the run's {wall_s:.2f} s; silent over 1 s: "
            f"{', '.join(stretches) or 'none'}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    ap.add_argument("--nodes", default="", help="comma-separated nodes to kill (default: every node)")
    ap.add_argument("--settle-s", type=float, default=4.0, help="after a node is back, before the next kill")
    ap.add_argument("--warm-s", type=float, default=5.0, help="after the start, before the first kill")
    ap.add_argument("--out", default=str(ROOT / "out" / "kill_nodes"))
    args = ap.parse_args()

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    clip = ROOT / "demo" / "demo.mp4"
    graph = load_graph(Path(args.config), NODE_TYPES, overrides=[
        f"camera.source={clip}", "camera.loop=true", f"microphone.source={clip}", "microphone.loop=true",
        f"renderer.mp4_path={out / 'demo.mp4'}", f"renderer.wav_dir={out / 'voices'}",
        "settings.pace=realtime", "settings.heartbeat_s=0.2"])
    victims = [n for n in (args.nodes.split(",") if args.nodes else graph.nodes) if n]
    unknown = sorted(set(victims) - set(graph.nodes))
    if unknown:
        ap.error(f"no node(s) {unknown} in {args.config}; it has {sorted(graph.nodes)}")

    sup, events, code, thread = run_in_background(graph)
    t0 = time.monotonic()
    rows = []
    renderer_killed_s: float | None = None
    try:
        if not wait_for(lambda: sup.epoch_ns and all(produced(n.stats) > 0 for n in sup.nodes.values()), 180, 0.02):
            print("the graph did not get going in 180 s:", *events[-10:], sep="\n  ")
            return 1
        print(f"graph running after {time.monotonic() - t0:.1f} s (models loaded); killing "
              f"{', '.join(victims)} in turn", flush=True)
        time.sleep(args.warm_s)
        for name in victims:
            node = sup.nodes[name]
            readers = readers_of(graph, name)
            lost_before = {r: lost(sup, *r) for r in readers}
            victim = node.proc.pid
            killed = time.monotonic()
            at_s = (time.monotonic_ns() - sup.epoch_ns) / 1e9  # on the graph's clock (the files' timeline)
            if name == "renderer":
                renderer_killed_s = at_s
            os.kill(victim, signal.SIGKILL)
            marks: dict[str, float] = {}

            def back() -> bool:
                now = time.monotonic()
                if node.proc is None or node.proc.pid == victim:
                    return False
                marks.setdefault("spawned", now)
                if node.state in ("ready", "running"):
                    marks.setdefault("ready", now)
                return node.state == "running" and produced(node.stats) > 0

            resumed_s = time.monotonic() - killed if wait_for(back, 60, 0.02) else float("nan")
            spawned_s, ready_s = (marks.get(k, float("nan")) - killed for k in ("spawned", "ready"))
            # every reader's count moves once it has taken the new process's first message
            wait_for(lambda: all(lost(sup, *r) > lost_before[r] for r in readers), 15, 0.02)
            time.sleep(1.0)
            losses = {f"{n}.{p}": lost(sup, n, p) - lost_before[(n, p)] for n, p in readers}
            rows.append((name, spawned_s, ready_s, resumed_s, losses))
            print(f"  {name:<15} killed at {at_s:5.1f} s, resumed after {resumed_s:5.2f} s   lost downstream: "
                  f"{', '.join(f'{k} {v}' for k, v in losses.items()) or '(no readers)'}", flush=True)
            time.sleep(args.settle_s)
    finally:
        epoch_ns = sup.epoch_ns
        stopped_ns = time.monotonic_ns()
        sup.stop()
        thread.join(60)

    wall_s = (stopped_ns - epoch_ns) / 1e9 if epoch_ns else 0.0
    print()
    print(f"{'node':<15} {'spawned':>7} {'ready':>6} {'resumed':>7}  {'lost':>5}  lost per input  (s after the kill)")
    for name, spawned_s, ready_s, resumed_s, losses in rows:
        flag = "" if resumed_s <= 2.0 else "  > 2 s"
        print(f"{name:<15} {spawned_s:>7.2f} {ready_s:>6.2f} {resumed_s:>7.2f}  {sum(losses.values()):>5}  "
              f"{', '.join(f'{k} {v}' for k, v in losses.items()) or '-'}{flag}")
    print()
    renderer_down_s = next((r[3] for r in rows if r[0] == "renderer"), 0.0)
    for line in check_mp4(out / "demo.mp4", wall_s, renderer_killed_s, renderer_down_s):
        print(line)
    print("\nwhat each node said at the end (its last process; drops of a renderer slower than real time included):")
    for line in sup.summary():
        print(f"  {line}")
    for wav in sorted((out / "voices").glob("voice_*.wav")):
        print(describe_wav(wav, wall_s))
    restarts = sum(n.restarts for n in sup.nodes.values())
    print(f"supervisor: {restarts} restarts; exit {code[0] if code else '?'} (130: stopped by this script)")
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
