"""How many concurrent 640×480 @ 30 fps video streams does the transport carry before its p99 latency
passes one frame period (33.3 ms)? On the whole machine, and on one CPU core (issue 17, "scale").

    python benchmarks/scale.py [--streams 1,2,4,8,16,32,48,64,96,128] [--seconds 6] [--png out/scale/scale.png]

One writer process sends N streams (one `pipeline.transport.Publisher` each, as N camera nodes would,
their frames spread evenly over the frame period), one reader process takes them all (one `Subscriber`
each on one poller, as a node with N inputs does): encode, ipc, decode, the bounded queue, every check.
Each frame is stamped with the time it was *due*, so a writer that falls behind shows up as latency,
not as a slower schedule. "one core" pins both processes to CPU 0 (``sched_setaffinity``): the
Jetson-class budget. A GPU does not move bytes between processes, so there is no GPU row.

Per N it prints p50/p99 latency, the share of frames delivered, and the CPU time both processes used
per second; the largest N whose p99 stays within one frame period with ≥ 99 % delivered is what the
transport "carries". The PNG plots p50 and p99 against N for both settings, the frame period as a line.
State the machine's load beside any figure: it is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.messages import EndOfStream, VideoFrame  # noqa: E402
from pipeline.transport import Publisher, Subscriber  # noqa: E402

FPS = 30.0
PERIOD_MS = 1e3 / FPS
SHAPE = (480, 640, 3)


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def read(endpoints: list[str], core: int | None, seconds: float, out: mp.Queue) -> None:
    """The reader: every stream on one poller; latency = arrival − due time, per frame."""
    if core is not None:
        os.sched_setaffinity(0, {core})
    ctx = zmq.Context()
    subs = [Subscriber(ctx, e, policy="queue", size=64, name=f"s{i}", accepts=None) for i, e in enumerate(endpoints)]
    poller = zmq.Poller()
    by_socket = {s.socket: s for s in subs}
    for sock in by_socket:
        poller.register(sock, zmq.POLLIN)
    out.put("ready")
    lat: list[int] = []
    frames = 0
    deadline = time.monotonic() + seconds + 15
    c0 = cpu_s()
    while not all(s.finished for s in subs) and time.monotonic() < deadline:
        for sock, _ in poller.poll(20):
            sub = by_socket[sock]
            sub.drain()
            while (msg := sub.pop()) is not None:
                if isinstance(msg, VideoFrame):
                    lat.append(time.monotonic_ns() - msg.capture_ns)
                    frames += 1
    out.put((lat, frames, cpu_s() - c0, sum(s.stats.lost + s.stats.dropped for s in subs)))
    for s in subs:
        s.close()
    ctx.term()


def run(streams: int, seconds: float, core: int | None, tmp: str) -> dict:
    if core is not None:
        os.sched_setaffinity(0, {core})
    ctx = zmq.Context()
    pubs = [Publisher(ctx, f"ipc://{tmp}/scale-{streams}-{i}", kind=VideoFrame) for i in range(streams)]
    spawn = mp.get_context("spawn")
    out = spawn.Queue()
    reader = spawn.Process(target=read, args=([p.endpoint for p in pubs], core, seconds, out))
    reader.start()
    assert out.get(timeout=60) == "ready"
    for p in pubs:
        assert p.wait_for_subscribers(1, 20), "the reader did not subscribe"
    time.sleep(0.3)
    images = [np.full(SHAPE, i % 256, np.uint8) for i in range(streams)]
    period_ns = int(1e9 / FPS)
    start = time.monotonic_ns() + 50_000_000
    sent, c0, k = 0, cpu_s(), 0
    total = int(seconds * FPS) * streams
    while k < total:
        tick, i = divmod(k, streams)
        due = start + tick * period_ns + i * period_ns // streams  # streams spread over the frame period
        wait = due - time.monotonic_ns()
        if wait > 0:
            time.sleep(wait / 1e9)
        pubs[i].send(VideoFrame(image=images[i], frame_index=tick, capture_ns=due), source="bench")
        sent += 1
        k += 1
    writer_cpu = cpu_s() - c0
    for p in pubs:
        p.send_reliably(EndOfStream(), source="bench")
    lat, frames, reader_cpu, missed = out.get(timeout=seconds + 60)
    reader.join(10)
    for p in pubs:
        p.close(linger_ms=0)
    ctx.term()
    lat_ms = np.array(lat, np.float64) / 1e6 if lat else np.array([np.inf])
    return {"streams": streams, "p50": float(np.percentile(lat_ms, 50)), "p99": float(np.percentile(lat_ms, 99)),
            "delivered": frames / max(sent, 1), "missed": missed, "cpu_per_s": (writer_cpu + reader_cpu) / seconds}


def _point(streams: int, seconds: float, core: int | None, tmp: str, out: mp.Queue) -> None:
    out.put(run(streams, seconds, core, tmp))


def measure(streams: int, seconds: float, core: int | None, tmp: str) -> dict:
    """Each point in its own process, so that pinning one setting to a core does not pin the next."""
    spawn = mp.get_context("spawn")
    out = spawn.Queue()
    proc = spawn.Process(target=_point, args=(streams, seconds, core, tmp, out))
    proc.start()
    result = out.get(timeout=seconds + 120)
    proc.join(10)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", default="1,2,4,8,16,32,48,64,96,128", help="stream counts to try, ascending")
    ap.add_argument("--seconds", type=float, default=6.0, help="per point")
    ap.add_argument("--png", type=Path, default=ROOT / "out" / "scale" / "scale.png")
    args = ap.parse_args()
    counts = [int(x) for x in args.streams.split(",")]
    print(f"640x480x3 @ {FPS:g} fps streams over ipc, {args.seconds:g} s per point, {os.cpu_count()} cores; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{'setting':<10} {'streams':>7} {'p50 ms':>8} {'p99 ms':>8} {'delivered':>10} {'CPU s/s':>8}")
    curves: dict[str, tuple[list[float], list[float]]] = {}
    carried: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        for setting, core in (("machine", None), ("one core", 0)):
            xs, p50s, p99s = [], [], []
            carried[setting] = 0
            for n in counts:
                r = measure(n, args.seconds, core, tmp)
                xs.append(n)
                p50s.append(r["p50"])
                p99s.append(r["p99"])
                ok = r["p99"] <= PERIOD_MS and r["delivered"] >= 0.99
                print(f"{setting:<10} {n:>7} {r['p50']:>8.2f} {r['p99']:>8.2f} {100 * r['delivered']:>9.1f}% "
                      f"{r['cpu_per_s']:>8.2f}{'' if ok else '   past one frame period'}")
                if ok and n > carried[setting]:
                    carried[setting] = n
                if not ok:
                    break  # more streams only get worse
            curves[f"p50 {setting}"] = (xs, p50s)
            curves[f"p99 {setting}"] = (xs, p99s)
    for setting, n in carried.items():
        print(f"{setting}: carries {n} stream{'s' if n != 1 else ''} of 640x480 @ 30 fps within one frame period (p99)")
    print(f"load average at the end {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    import cv2

    from media.charts import line_chart

    finite = {k: (x, [min(v, 4 * PERIOD_MS) for v in y]) for k, (x, y) in curves.items()}
    img = line_chart("transport: 640x480 @ 30 fps streams, one hop (capped at 4 periods)", finite, x_label="streams",
                     y_label="latency ms", hline=(PERIOD_MS, "one frame period"), w=720, h=420)
    args.png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.png), img)
    print(f"plot → {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
