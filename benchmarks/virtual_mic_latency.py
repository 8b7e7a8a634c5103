"""The virtual microphone's latency: from the renderer's ``mic.audio(block)`` to a call app reading it.

    python benchmarks/virtual_mic_latency.py [--seconds 10] [--latency-msec 10] [--settle-s 0.5] [--no-pyaudio]

A private PulseAudio daemon is started the way the tests start it (``tests.pulse``: a daemon whose
only card is a null sink; one already named by ``PULSE_SERVER`` is reused), a ``VirtualMicSink``
("earshot_bench") is opened on it and its source is recorded as a call app would: with ``parec
--latency-msec=N`` and, if PyAudio is importable, also with a PyAudio input stream (through ALSA's
pulse plugin, ``PULSE_SOURCE`` naming the source). ``--settle-s`` after ``open()`` (default 0.5 s: the
recorders connect; a renderer feeds at once) the sink is fed in real time, as the renderer feeds it,
10 ms blocks of silence with a click every 250 ms after 1 s of silence (an idle null sink's monitor
starts with the first sound: the lead-in keeps the first click), each click a 1 ms pulse from the
block's first sample whose height (0.3 … 0.9, 8 steps) numbers it, so a click found is matched to the
one sent even when one is lost or the latency exceeds 250 ms.

Found with it (PulseAudio 16.1): a freshly loaded null sink takes nothing from its input for ~2 s, so
what the renderer wrote meanwhile waited in the pipe to ``pacat`` (up to its 64 KiB, ~1 s) and the
call heard it that much late for good (p50 954 ms). The sink now returns from ``open()`` only once the
server takes audio, and drops (counts) what would wait more than ``max_backlog_ms`` in its pipe
(`media/sinks/virtual_mic.py`); ``--settle-s 3`` gives the same figure as the default now.

Per click: latency = when the recorder read the chunk holding the click's onset (``time.monotonic()``
in the reader thread, right after the read returned) − the duration of the samples that follow the
onset in that chunk − when the block with the click was handed to ``mic.audio``. Printed: p50 / p95 /
max over the clicks, clicks found vs sent, the setting and the load average; and, as the likely
cause of a large figure, how much audio waited in the pipe to the sink's ``pacat`` at the end and the
longest ``mic.audio`` call (a full pipe blocks the renderer).

Resolution: the onset is found to the sample (62.5 µs at 16 kHz) and the clocks are read to the µs,
but a recorder only wakes when its chunk arrives (parec got 5 ms chunks here with --latency-msec 10
and 30 alike, PyAudio its 10 ms reads; the median chunk is printed). The correction assumes the
chunk's samples were produced in real time up to the read, so a chunk that arrives in a burst (a late
wake-up) reads a few ms low or high. On a loaded machine (state the load) the scheduler adds its own
delays to both the writer and the reader.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SR = 16000
BLOCK = SR // 100          # 10 ms
CLICK = SR // 1000         # 1 ms pulse
EVERY = 25                 # blocks between clicks: 250 ms
LEAD_IN = 100              # blocks of silence first: 1 s
LEVELS = 0.3 + 0.6 * np.arange(8) / 7  # click heights: the click's number mod 8
SOURCE = "earshot_bench"


class Recorder(threading.Thread):
    """Reads (monotonic time, samples) chunks from ``read`` until it returns nothing or stop is set."""

    def __init__(self, name: str, read) -> None:
        super().__init__(name=name, daemon=True)
        self.read, self.chunks, self.stopping = read, [], False

    def run(self) -> None:
        pending = b""
        while not self.stopping:
            data = self.read()
            now = time.monotonic()
            if not data:
                return
            data, pending = pending + data, b""
            if len(data) % 4:
                data, pending = data[:len(data) // 4 * 4], data[len(data) // 4 * 4:]
            self.chunks.append((now, np.frombuffer(data, "<f4")))

    def onsets(self) -> list[tuple[float, float]]:
        """(corrected read time, height) of each click: a sample above 0.15 after ≥ 50 ms of quiet."""
        found, quiet = [], 0
        for t, x in self.chunks:
            loud = np.abs(x) > 0.15
            for j in np.flatnonzero(loud):
                if quiet + j >= 800:
                    found.append((t - (x.size - j) / SR, float(np.abs(x[j:j + CLICK]).max())))
                quiet = -int(j) - 1  # counts from the sample after this loud one
            quiet += x.size
        return found


def match(sent: list[tuple[float, int]], found: list[tuple[float, float]]) -> list[float]:
    """Latency (ms) of each found click: the latest sent click of its height handed before it was read."""
    out, used = [], set()
    for t_read, height in found:
        code = int(np.argmin(np.abs(LEVELS - height)))
        cands = [k for k, (t, c) in enumerate(sent) if c == code and t < t_read and k not in used]
        if cands:
            used.add(cands[-1])
            out.append(1000 * (t_read - sent[cands[-1]][0]))
    return out


def summary(name: str, lat: list[float], sent: int) -> str:
    if not lat:
        return f"{name:>8}: 0 of {sent} clicks found"
    p50, p95 = np.percentile(lat, [50, 95])
    return (f"{name:>8}: {len(lat)} of {sent} clicks found; latency p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
            f"max {max(lat):.1f} ms, min {min(lat):.1f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="how long to feed the sink (default 10)")
    ap.add_argument("--latency-msec", type=int, default=10, help="parec's --latency-msec (default 10)")
    ap.add_argument("--sink-latency-msec", type=int, default=20, help="VirtualMicSink's pacat latency (default 20)")
    ap.add_argument("--no-pyaudio", action="store_true", help="record with parec only")
    ap.add_argument("--settle-s", type=float, default=0.5, help="wait after open() before feeding (default 0.5)")
    args = ap.parse_args()
    missing = [t for t in ("pulseaudio", "pactl", "pacat", "parec") if not shutil.which(t)]
    if missing:
        print(f"PulseAudio is not installed ({', '.join(missing)} not found): "
              "apt-get install pulseaudio pulseaudio-utils", file=sys.stderr)
        return 2

    from media.audio_device import _quiet_stderr
    from media.sinks import VirtualMicSink, voice_track
    from tests.pulse import _reachable, start_daemon, stop_daemon

    directory = None
    if not (os.environ.get("PULSE_SERVER") and _reachable(os.environ["PULSE_SERVER"])):
        directory = tempfile.mkdtemp(prefix="earshot-pulse-")
        os.environ["PULSE_SERVER"] = start_daemon(directory)
    os.environ["PULSE_SOURCE"] = SOURCE  # PyAudio's default input (libpulse reads it)
    mic = VirtualMicSink(SOURCE, SR, play_track=0, latency_ms=args.sink_latency_msec)
    recorders, procs, pa, stream = [], [], None, None
    try:
        if not mic.open():
            print("the virtual microphone did not open (see the log above)", file=sys.stderr)
            return 1
        parec = subprocess.Popen(["parec", "--raw", "--format=float32le", f"--rate={SR}", "--channels=1",
                                  f"--latency-msec={args.latency_msec}", f"--device={SOURCE}"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        procs.append(parec)
        recorders.append(Recorder("parec", lambda: parec.stdout.read1(65536)))
        try:
            import pyaudio
        except ImportError:
            pyaudio = None
        if args.no_pyaudio:
            pyaudio = None
        if pyaudio is not None:
            with _quiet_stderr():
                pa = pyaudio.PyAudio()
            stream = pa.open(format=pyaudio.paFloat32, channels=1, rate=SR, input=True, frames_per_buffer=BLOCK)
            recorders.append(Recorder("pyaudio", lambda: stream.read(BLOCK, exception_on_overflow=False)))
        for r in recorders:
            r.start()
        time.sleep(args.settle_s)  # at least the recorders are connected before the first block

        sent: list[tuple[float, int]] = []
        longest_call = 0.0
        silence = np.zeros(BLOCK, np.float32)
        start = time.monotonic()
        for k in range(int(args.seconds * 100)):
            block = silence
            if k >= LEAD_IN and (k - LEAD_IN) % EVERY == 0:
                code = len(sent) % len(LEVELS)
                block = silence.copy()
                block[:CLICK] = LEVELS[code]
                sent.append((time.monotonic(), code))
            t = time.monotonic()
            mic.audio({voice_track(0): block}, first_sample=k * BLOCK)
            longest_call = max(longest_call, time.monotonic() - t)
            time.sleep(max(0.0, start + (k + 1) / 100 - time.monotonic()))
        queued = mic.backlog_bytes()  # bytes not yet taken by pacat
        time.sleep(1.5)  # the last click's way through
        dropped_s = mic.stats()["dropped_s"]
    finally:
        for r in recorders:
            r.stopping = True
        for p in procs:
            p.terminate()
            p.wait(5)
        for r in recorders:
            r.join(2)
        if stream is not None:
            stream.close()
        if pa is not None:
            pa.terminate()
        mic.close()
        if directory is not None:
            stop_daemon(directory)
            shutil.rmtree(directory, ignore_errors=True)

    sizes = {r.name: np.median([x.size for _, x in r.chunks]) / SR * 1000 if r.chunks else 0 for r in recorders}
    print(f"setting: parec --latency-msec={args.latency_msec}, sink pacat --latency-msec={args.sink_latency_msec}, "
          f"fed {args.settle_s:g} s after open() for {args.seconds:g} s in 10 ms blocks, a click every 250 ms "
          f"after 1 s; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    for r in recorders:
        print(summary(r.name, match(sent, r.onsets()), len(sent)) + f"; median chunk {sizes[r.name]:.1f} ms")
    print(f"waiting in the pipe to pacat at the last block: {queued / 4 / SR * 1000:.0f} ms of audio; "
          f"longest mic.audio call {longest_call * 1000:.1f} ms; dropped by the sink (the server fell behind) "
          f"{dropped_s:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
