"""Stop the renderer (SIGSTOP) for 10 s in a live graph: how much audio is lost, how much memory the
other processes take meanwhile, and what the log says (issue 15).

    python benchmarks/stall.py [--config configs/demo.yaml] [--stall-s 10] [--warm-s 6] [--after-s 6]
    python benchmarks/stall.py --mic-max-bytes 512KiB   # a budget too small for the stall: see a gap marked

Runs the graph on the shipped clip, looping, played in real time (``settings.pace=realtime``, as a
live camera and microphone deliver), with its MP4 and WAVs in out/stall/. Once every node runs and
the graph has warmed up, it SIGSTOPs the renderer's process for ``--stall-s`` seconds, SIGCONTs it,
waits until the renderer has taken all the mixture the microphone had sent by then (its catch-up),
lets the graph run ``--after-s`` more and stops it. It prints:

* audio: per audio input of every node, the samples not delivered since the stall began (the
  transport's ``gap_samples``: dropped by a queue, or lost before it, counted from the sequence
  numbers), and the messages dropped/lost; the mixture the microphone sent against what the renderer
  took (the difference is what was in flight at the stop, or lost), and the MP4's mixture track: its
  length against the run's wall-clock span, and how much of it is gap-filling silence. Goal: 0 samples
  lost with the default byte budgets (10 s of 16 kHz float32 is 640 kB of samples, ~1.2 MB in a pipe);
* video: what the renderer's video input dropped or lost (by policy: a stalled reader's writer keeps
  at most its byte budget, 32 MiB by default, and drops the newest beyond it);
* memory: each node's peak resident memory (VmRSS sampled every 50 ms) before the stall, during it
  and after it, and each output's byte budget per reader with its high-water mark. The bound during
  the stall: a writer holds at most its output's ``max_bytes`` per stalled reader (plus the kernel's
  socket buffer, ~200 kB on ipc), so the camera grows by at most 32 MiB, an audio source by at most 8 MiB;
* the warning lines the nodes logged during the run (their stderr goes to out/stall/nodes.log).

``--mic-max-bytes`` sets the microphone's output budget (per reader) in a copy of the graph: one too
small for the stall (512KiB holds ~4 s of 10 ms chunks) shows what a loss looks like: the renderer's
one warning line for the burst, the gap marked in the MP4 (its comment, the red frames) and counted.

State the machine's load beside any figure: it is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nodes import NODE_TYPES  # noqa: E402
from pipeline.graph import load_graph  # noqa: E402
from pipeline.supervisor import Supervisor  # noqa: E402
from benchmarks.proc_stats import run_in_background, status_mib, wait_for  # noqa: E402

#: the audio inputs' counters this reads (pipeline.transport: audio inputs report gap_samples)
AUDIO_KEYS = ("dropped", "lost", "gap_samples")


class RssSampler(threading.Thread):
    """VmRSS of every node's current process every 50 ms, the peak kept per phase."""

    def __init__(self, sup: Supervisor) -> None:
        super().__init__(daemon=True)
        self.sup, self.phase, self.done = sup, "before", False
        self.peaks: dict[str, dict[str, float]] = {}

    def run(self) -> None:
        while not self.done:
            for name, node in list(self.sup.nodes.items()):
                if node.proc is not None:
                    peak = self.peaks.setdefault(name, {})
                    peak[self.phase] = max(peak.get(self.phase, 0.0), status_mib(node.proc.pid) or 0.0)
            time.sleep(0.05)


def inputs(sup: Supervisor) -> dict[tuple[str, str], dict]:
    return {(name, port): s for name, node in sup.nodes.items() for port, s in node.stats.get("inputs", {}).items()}


def sent(sup: Supervisor, node: str, port: str) -> int:
    return sup.nodes[node].stats.get("outputs", {}).get(port, {}).get("sent", 0)


def mixture_in_mp4(path: Path) -> tuple[float, int, float] | None:
    """(seconds of the mixture track, its sample rate, seconds of the video) of the MP4; None if unreadable."""
    import av

    try:
        with av.open(str(path)) as container:
            rate = container.streams.audio[0].rate
            samples = sum(f.samples for f in container.decode(audio=0))
        with av.open(str(path)) as container:
            times = [f.time for f in container.decode(video=0)]
            comment = container.metadata.get("comment", "")
    except Exception as exc:  # noqa: BLE001 - whatever stops a decode is the answer here
        print(f"FAIL: {path} does not decode: {exc}")
        return None
    if comment:
        print(f"  MP4 comment: {comment[:300]}")
    return samples / rate, rate, (times[-1] if times else 0.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    ap.add_argument("--stall-s", type=float, default=10.0)
    ap.add_argument("--warm-s", type=float, default=6.0, help="after every node runs, before the stall")
    ap.add_argument("--after-s", type=float, default=6.0, help="after the renderer caught up, before the stop")
    ap.add_argument("--out", default=str(ROOT / "out" / "stall"))
    ap.add_argument("--mic-max-bytes", default="", help="the microphone's output budget per reader (e.g. 512KiB)")
    args = ap.parse_args()

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    clip = ROOT / "demo" / "demo.mp4"
    config = Path(args.config)
    if args.mic_max_bytes:  # a copy of the graph with the microphone's budget set
        import yaml

        data = yaml.safe_load(config.read_text())
        mic = data["nodes"]["microphone"]
        mic["outputs"] = {**(mic.get("outputs") or {}), "audio": {"max_bytes": args.mic_max_bytes}}
        config = out / config.name
        config.write_text(yaml.safe_dump(data))
    graph = load_graph(config, NODE_TYPES, overrides=[
        f"camera.source={clip}", "camera.loop=true", f"microphone.source={clip}", "microphone.loop=true",
        f"renderer.mp4_path={out / 'demo.mp4'}", f"renderer.wav_dir={out / 'voices'}",
        "settings.pace=realtime", "settings.heartbeat_s=0.2",
        # the stall is the subject, not the supervisor's hang detection: it must not restart the renderer
        f"settings.heartbeat_timeout_s={max(15.0, args.stall_s + 10)}"])
    print(f"{args.config}: {len(graph.nodes)} nodes, real time, looping {clip.name}; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores", flush=True)

    # the nodes inherit stderr: their log goes to a file, read back at the end
    log_path = out / "nodes.log"
    saved_stderr = os.dup(2)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(log_fd, 2)
    sup, events, code, thread = run_in_background(graph)
    sampler = RssSampler(sup)
    sampler.start()
    t0 = time.monotonic()
    stalled_at_s = caught_up_s = None
    at_stall: dict = {}
    mic_sent = {}
    try:
        if not wait_for(lambda: sup.epoch_ns and all(n.state == "running" for n in sup.nodes.values())
                        and sent(sup, "microphone", "audio") > 0, 240):
            print("the graph did not get going in 240 s:", *events[-10:], sep="\n  ")
            return 1
        print(f"graph running after {time.monotonic() - t0:.1f} s; warming up {args.warm_s:.0f} s", flush=True)
        time.sleep(args.warm_s)
        renderer = sup.nodes["renderer"].proc.pid
        at_stall = {key: dict(s) for key, s in inputs(sup).items()}
        mic_sent["stall"] = sent(sup, "microphone", "audio")
        stalled_at_s = (time.monotonic_ns() - sup.epoch_ns) / 1e9
        sampler.phase = "stall"
        os.kill(renderer, signal.SIGSTOP)
        try:
            time.sleep(args.stall_s)
        finally:
            os.kill(renderer, signal.SIGCONT)
        sampler.phase = "after"
        resumed = time.monotonic()
        time.sleep(0.5)  # a heartbeat or two, so the microphone's count is the one at SIGCONT
        mic_sent["cont"] = sent(sup, "microphone", "audio")
        took = lambda: inputs(sup).get(("renderer", "audio"), {}).get("delivered", 0)  # noqa: E731
        base = at_stall.get(("renderer", "audio"), {}).get("delivered", 0)
        if wait_for(lambda: took() >= base + (mic_sent["cont"] - mic_sent["stall"]), 120):
            caught_up_s = time.monotonic() - resumed
        print(f"renderer stopped at {stalled_at_s:.1f} s for {args.stall_s:.0f} s; it took the mixture sent "
              f"meanwhile {'in %.1f s' % caught_up_s if caught_up_s is not None else 'NOT within 120 s'} after "
              f"SIGCONT; running {args.after_s:.0f} s more", flush=True)
        time.sleep(args.after_s)
        # let the last heartbeats of the mixture's counts meet before stopping
        wait_for(lambda: took() >= sent(sup, "microphone", "audio") - 2, 5)
    finally:
        epoch_ns, stopped_ns = sup.epoch_ns, time.monotonic_ns()
        final_sent = sent(sup, "microphone", "audio")
        final = inputs(sup)
        sup.stop()
        thread.join(90)
        sampler.done = True
        os.dup2(saved_stderr, 2)
        os.close(log_fd)

    wall_s = (stopped_ns - epoch_ns) / 1e9 if epoch_ns else 0.0
    final = inputs(sup) or final  # the last heartbeats, sent as each node stopped
    print(f"\nload average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")

    print("\naudio inputs, since the stall began (gap_samples: samples not delivered; lost ones estimated):")
    lost_samples = 0
    for (name, port), s in sorted(final.items()):
        if "gap_samples" not in s:
            continue
        before = at_stall.get((name, port), {})
        delta = {k: s.get(k, 0) - before.get(k, 0) for k in AUDIO_KEYS}
        lost_samples += delta["gap_samples"] if name == "renderer" else 0
        print(f"  {name + '.' + port:<24} gap {delta['gap_samples']:>7} samples "
              f"({delta['gap_samples'] / 16:.0f} ms at 16 kHz), "
              f"dropped {delta['dropped']}, lost {delta['lost']}   (whole run: gap {s.get('gap_samples', 0)}, "
              f"{s.get('gap_bursts', 0)} bursts)")
    stats = sup.nodes["renderer"].stats.get("counters", {})
    chunk_s = 0.01  # microphone chunk_ms in the demo graph
    received_s = stats.get("audio_s_received.mixture", 0.0)
    written_s = stats.get("mp4.audio_s_written.mixture", 0.0)
    print(f"\nmixture: the microphone sent {final_sent * chunk_s:.2f} s (by its heartbeats), the renderer took "
          f"{received_s:.2f} s and wrote {written_s:.2f} s of it into the MP4")
    mp4 = mixture_in_mp4(out / "demo.mp4")
    if mp4 is not None:
        track_s, _, video_s = mp4
        print(f"  {out / 'demo.mp4'}: mixture track {track_s:.2f} s of which {max(0.0, track_s - written_s):.2f} s "
              f"gap-filling silence (incl. the AAC frame rounding); video to {video_s:.2f} s; the run's wall span "
              f"{wall_s:.2f} s (from the graph's start to the stop)")
    print(f"  renderer's audio inputs: {lost_samples} samples not delivered since the stall "
          f"({'OK: none lost' if lost_samples == 0 else 'LOST AUDIO'}); MP4 audio gaps marked: "
          f"{stats.get('mp4.audio_gaps', 0)} ({stats.get('mp4.audio_gap_s', 0.0):.2f} s), frames marked "
          f"{stats.get('mp4.frames_marked_audio_gap', 0)}")

    video = final.get(("renderer", "video"), {})
    before = at_stall.get(("renderer", "video"), {})
    print(f"\nvideo into the renderer since the stall: dropped {video.get('dropped', 0) - before.get('dropped', 0)}, "
          f"lost {video.get('lost', 0) - before.get('lost', 0)} (by policy: the camera keeps at most its budget for a "
          f"stalled reader); MP4 frames written {stats.get('mp4.frames_in_file', stats.get('mp4.frames_written', 0))}")

    print(f"\npeak resident memory (MiB, VmRSS every 50 ms): before the stall / during its {args.stall_s:.0f} s "
          "/ after")
    for name in sup.nodes:
        peak = sampler.peaks.get(name, {})
        b, d, a = (peak.get(k, 0.0) for k in ("before", "stall", "after"))
        outs = sup.nodes[name].stats.get("outputs", {})
        budgets = ", ".join(f"{p} {o.get('max_bytes', 0) / 2**20:g} MiB/reader (HWM {o.get('hwm', '?')})"
                            for p, o in outs.items())
        print(f"  {name:<15} {b:7.1f} {d:7.1f} {a:7.1f}   {d - b:+6.1f} in the stall   {budgets}")

    lines = log_path.read_text(errors="replace").splitlines()
    warnings = [line for line in lines if " WARNING " in line or " ERROR " in line]
    print(f"\nthe nodes' warnings and errors ({len(warnings)} of {len(lines)} log lines, {log_path}):")
    for line in warnings[:40]:
        print(f"  {line[:300]}")
    if len(warnings) > 40:
        print(f"  … {len(warnings) - 40} more")
    print("\nwhat each node said at the end:")
    for line in sup.summary():
        print(f"  {line[:300]}")
    print(f"supervisor: exit {code[0] if code else '?'} (130: stopped by this script)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
