"""One-way hop latency through `pipeline.transport`, beside raw pyzmq in the same run.

    python benchmarks/transport.py [--count 400] [--rounds 3] [--breakdown] [--floor] [--lean]
    python benchmarks/transport.py --cold     each step of a 64 B message, warm and after the 2 ms gap (decode
                                              compiled where built, and in Python)

The sender stamps ``time.monotonic_ns()`` (one clock for all processes on Linux); a
receiver in another process reads it back and reports now − stamp. "earshot" is the full
path a node sees: encode → XPUB → SUB → poll → decode → bounded queue → the node's hook. "raw" is PUB → SUB
with the same frames and copy policy and a blocking recv. The paths run at once, their messages taking turns
(`run`), and the ratio earshot/raw of the pooled p50s is the figure we track (goal ≤ 1.2×); "per run" is the
least and most of it over the runs. ``--breakdown`` adds earshot's sender with a raw reader (the extra split into send and receive);
``--floor`` adds earshot's sender with the least reader that still checks what it gets (`receive_floor`):
what any checked Python hop pays on this machine, before a queue or a counter; ``--lean`` a reader of a binary
16-byte header (one precompiled `struct` call) and the array, no checks: what a binary header could reach, and the
same reader behind a poll ("polled"), as a node must read.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.messages import (_DTYPE, _FLOAT_DTYPES, _REGISTRY_BY_TOPIC, AudioChunk, VideoFrame,  # noqa: E402
                               _check_values, _decode_fast, _header_decoder, _parse_fast, decode, encode)
from pipeline.transport import ZERO_COPY_MIN_BYTES, Publisher, Subscriber  # noqa: E402

SIZES = {
    "64 B": lambda: AudioChunk(samples=np.zeros(16, np.float32)),
    "640x480x3": lambda: VideoFrame(image=np.zeros((480, 640, 3), np.uint8)),
    "1280x720x3": lambda: VideoFrame(image=np.zeros((720, 1280, 3), np.uint8)),
}


def receive_earshot(endpoint: str, count: int, out: mp.Queue, python_read: bool = False) -> None:
    """What a node's loop does: poll, drain into the bounded queue, pop. ``python_read``: the drain reads and
    decodes in Python, not through the compiled read and decoder (`--python-read`: the A/B)."""
    import pipeline.messages
    import pipeline.transport

    if python_read:
        pipeline.transport.COMPILED_READ = None
        pipeline.messages._COMPILED_DECODE = None
    ctx = zmq.Context()
    sub = Subscriber(ctx, endpoint, policy="queue", size=count + 10, name="bench")
    wait = pipeline.transport.waiter([sub.socket])
    lat = []
    while len(lat) < count:
        wait(20)
        sub.drain()
        while (msg := sub.pop()) is not None:
            lat.append(time.monotonic_ns() - msg.capture_ns)
    out.put(lat)
    sub.close()
    ctx.term()


def subscribed(endpoint: str) -> tuple[zmq.Context, zmq.Socket]:
    """A plain pyzmq SUB socket on ``endpoint``, subscribed to everything: the raw readers' socket."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    return ctx, sock


def read_blocking(endpoint: str, count: int, out: mp.Queue, stamp_of) -> None:
    """A blocking pyzmq reader: ``stamp_of(frames)`` gives each message's capture time (reading it however the
    caller's path does), and the latency is taken after it returns."""
    ctx, sock = subscribed(endpoint)
    lat = []
    while len(lat) < count:
        stamp = stamp_of(sock.recv_multipart(copy=False))
        lat.append(time.monotonic_ns() - stamp)
    out.put(lat)
    sock.close(linger=0)
    ctx.term()


def raw_stamp(frames: list) -> int:
    """The raw sender's 8-byte stamp."""
    return int.from_bytes(frames[1].bytes, "little")


def header_stamp(frames: list) -> int:
    """Earshot's frames: the capture time cut out of the header bytes without a decode."""
    return int(frames[1].bytes.split(b'"capture_ns":', 1)[1].split(b",", 1)[0])


def receive_raw(endpoint: str, count: int, out: mp.Queue, stamp_in_header: bool = False) -> None:
    """A blocking raw pyzmq reader. ``stamp_in_header``: the frames are earshot's — with the earshot sender,
    what the sending side alone adds (``--breakdown``); else the raw sender's stamp."""
    read_blocking(endpoint, count, out, header_stamp if stamp_in_header else raw_stamp)


def floor_decode(frames: list) -> int:
    """The least a reader that checks what it gets can do in Python (``--floor``): the header parsed and checked
    by the same compiled decoder, each buffer viewed as an array and a float one's values checked, the message
    built; no poll, no queue, no counters, no gap or sender bookkeeping. Returns its capture time."""
    cls = _REGISTRY_BY_TOPIC[frames[0].bytes]
    header = _header_decoder(cls).decode(frames[1].bytes)
    fields = msgspec.structs.asdict(header.fields)
    for spec, frame in zip(header.buffers, frames[2:]):
        fields[spec.name] = arr = np.ndarray(spec.shape, _DTYPE[spec.dtype], frame.buffer)
        if spec.dtype in _FLOAT_DTYPES:
            _check_values(cls.type_name, spec.name, arr, 1e9)
    msg = object.__new__(cls)
    msg.__dict__.update(fields, seq=header.seq, capture_ns=header.capture_ns, source=header.source)
    return msg.capture_ns


LEAN_HEADER = struct.Struct("<qq")  # seq, capture time: a binary header read by one precompiled call


def lean_decode(frames: list) -> int:
    """``--lean``: a reader of raw frames whose header is LEAN_HEADER, the array viewed as numpy's: what a binary
    header could reach, before any field or value check. Returns its capture time."""
    _, stamp = LEAN_HEADER.unpack_from(frames[1].buffer)
    np.frombuffer(frames[2].buffer, np.uint8)
    return stamp


def receive_lean(endpoint: str, count: int, out: mp.Queue) -> None:
    read_blocking(endpoint, count, out, lean_decode)


def receive_lean_polled(endpoint: str, count: int, out: mp.Queue) -> None:
    """``--lean``'s reader behind a poll, as a node must read (it waits on several sockets at once): the poll and a
    non-blocking read, then the same 16-byte header. What a node's loop costs before any decoding."""
    ctx, sock = subscribed(endpoint)
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    lat = []
    while len(lat) < count:
        poller.poll(20)
        while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            stamp = lean_decode(sock.recv_multipart(zmq.NOBLOCK, copy=False))
            lat.append(time.monotonic_ns() - stamp)
    out.put(lat)
    sock.close(linger=0)
    ctx.term()


def receive_floor(endpoint: str, count: int, out: mp.Queue) -> None:
    """A blocking read and `floor_decode`: what is left between this and raw is the price of decoding with
    these libraries at all, caches cold between messages."""
    read_blocking(endpoint, count, out, floor_decode)


def cold_steps(count: int = 400, gap_s: float = 0.002) -> None:
    """``--cold``: each Python step of a 64 B message's trip, timed back to back ("warm") and after the
    benchmark's own 2 ms gap ("cold"), in this process, no sockets. Why: the hop's extra over raw pyzmq is
    Python work, and on this machine every step runs many times slower when the core has idled between
    messages, so the figure to beat is the cold one, not a microbenchmark's."""
    msg = SIZES["64 B"]()
    frames = [bytes(f) for f in encode(msg)]
    cls = _REGISTRY_BY_TOPIC[frames[0]]
    names = ("encode", "header parse", "array view", "value check", "message object", "decode (all)",
             "decode in Python")

    def steps() -> list[int]:
        t = [time.perf_counter_ns()]
        encode(msg)
        t.append(time.perf_counter_ns())
        parsed = _parse_fast(cls, frames[1])
        t.append(time.perf_counter_ns())
        arr = np.ndarray((16,), np.float32, memoryview(frames[2]))
        t.append(time.perf_counter_ns())
        _check_values(cls.type_name, "samples", arr, 1e9)
        t.append(time.perf_counter_ns())
        out = object.__new__(cls)
        out.__dict__.update(parsed[3], samples=arr, seq=parsed[0], capture_ns=parsed[1], source=parsed[2])
        out.check()
        t.append(time.perf_counter_ns())
        decode(frames)
        t.append(time.perf_counter_ns())
        _decode_fast(frames)
        t.append(time.perf_counter_ns())
        return list(np.diff(t))

    print(f"per-step cost of a 64 B message, p50 of {count} (µs): warm = back to back, cold = after a "
          f"{gap_s * 1e3:.0f} ms idle gap; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    warm = np.median([steps() for _ in range(count)], axis=0) / 1e3
    cold = []
    for _ in range(count):
        time.sleep(gap_s)
        cold.append(steps())
    cold = np.median(cold, axis=0) / 1e3
    print(f"{'step':<16} {'warm':>7} {'cold':>7} {'cold/warm':>10}")
    for name, w, c in zip(names, warm, cold):
        print(f"{name:<16} {w:>7.1f} {c:>7.1f} {c / w:>9.1f}×")


RAW_SENDERS = ("raw", "lean", "lean polled")  # paths whose sender is plain pyzmq, not a Publisher


def run(kinds: tuple[str, ...], make, count: int, gap_s: float, tmp: str) -> dict[str, np.ndarray]:
    """One run of every path at once, their messages taking turns (the order rotating each cycle; each path's
    messages `gap_s` apart, as when it ran alone), each to its own reader process. Why: the ratio is a few
    tens of µs on a hop that itself moved by more than that between separate runs on this machine (a raw 64 B
    hop of 162–329 µs over sessions 8–9); paths whose messages interleave see the same machine at the same
    moments, so drift cancels out of the ratio instead of landing in it."""
    ctx = zmq.Context()
    spawn = mp.get_context("spawn")
    socks, pubs, outs, procs = {}, {}, {}, {}
    for kind in kinds:
        endpoint = f"ipc://{tmp}/{kind.replace(' ', '-')}-{os.getpid()}"
        outs[kind] = spawn.Queue()
        target = {"earshot": receive_earshot, "python read": receive_earshot, "floor": receive_floor,
                  "lean": receive_lean,
                  "lean polled": receive_lean_polled}.get(kind, receive_raw)
        if kind not in RAW_SENDERS:
            pubs[kind] = Publisher(ctx, endpoint, hwm=count + 10)
            socks[kind] = pubs[kind].socket
        else:
            socks[kind] = ctx.socket(zmq.XPUB)
            socks[kind].setsockopt(zmq.SNDHWM, count + 10)
            socks[kind].bind(endpoint)
        procs[kind] = spawn.Process(target=target, args=(endpoint, count, outs[kind])
                                    + ((True,) if kind in ("send only", "python read") else ()))
        procs[kind].start()
    for kind in kinds:
        if kind not in RAW_SENDERS:
            assert pubs[kind].wait_for_subscribers(1, 20)
        else:
            socks[kind].recv()  # the subscription: the reader is there
    msg = make()
    payload = memoryview(np.ascontiguousarray(getattr(msg, next(iter(msg.array_fields()))))).cast("B")
    big = payload.nbytes >= ZERO_COPY_MIN_BYTES
    time.sleep(0.2)
    order = list(kinds)
    for _ in range(count):
        for kind in order:
            if kind == "raw":
                stamp = time.monotonic_ns().to_bytes(8, "little")
                socks[kind].send_multipart([b"VideoFrame", stamp, payload], copy=not big)
            elif kind in ("lean", "lean polled"):
                socks[kind].send_multipart([b"VideoFrame", LEAN_HEADER.pack(0, time.monotonic_ns()), payload],
                                           copy=not big)
            else:
                msg.capture_ns = time.monotonic_ns()
                pubs[kind].send(msg, source="bench")
            time.sleep(gap_s / len(kinds))
        order.append(order.pop(0))
    lat = {kind: np.array(outs[kind].get(timeout=60), dtype=np.float64) / 1e3 for kind in kinds}  # µs
    for kind in kinds:
        procs[kind].join(10)
        socks[kind].close(linger=0)
    ctx.term()
    return lat


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs per size, each with every path's messages taking turns; latencies pooled over them")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time earshot's sender with a raw reader: the hop's extra split into send and receive")
    parser.add_argument("--floor", action="store_true",
                        help="also time earshot's sender with the least reader that checks what it gets (no poll, "
                             "queue or counters): the part of the ratio any checked Python hop pays")
    parser.add_argument("--lean", action="store_true",
                        help="also time raw pyzmq frames with a 16-byte binary header read by one struct call and the "
                             "array viewed by numpy (no checks): what a binary header could reach")
    parser.add_argument("--python-read", action="store_true",
                        help="also the full path with the drain reading and decoding in Python instead of the "
                             "compiled read and decoder")
    parser.add_argument("--cold", action="store_true",
                        help="only time each Python step of a 64 B message warm and after the 2 ms gap, then exit")
    args = parser.parse_args()
    if args.cold:
        cold_steps()
        return 0
    kinds = (("raw", "earshot") + (("send only",) if args.breakdown else ()) + (("floor",) if args.floor else ())
             + (("lean", "lean polled") if args.lean else ()) + (("python read",) if args.python_read else ()))
    from pipeline.messages import _COMPILED_DECODE
    from pipeline.transport import COMPILED_READ
    print(f"earshot's drain reads {'compiled (pipeline/_fastzmq.pyx)' if COMPILED_READ else 'in Python'} and decodes "
          f"{'compiled (pipeline/_fastdecode.pyx)' if _COMPILED_DECODE else 'in Python'}")
    print(f"one-way hop latency over ipc, {args.count} messages per path in each of {args.rounds} runs, the paths' "
          f"messages taking turns; "
          f"{os.cpu_count()} cores, pyzmq {zmq.__version__} / libzmq {zmq.zmq_version()}; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{'payload':<12} {'raw p50':>9} {'raw p99':>9} {'earshot p50':>12} {'earshot p99':>12} {'ratio p50':>10}"
          f" {'per run':>12}"
          + (f" {'send only p50':>14} {'extra: send':>12} {'receive':>8}" if args.breakdown else "")
          + (f" {'floor p50':>10} {'floor ratio':>12}" if args.floor else "")
          + (f" {'lean p50':>9} {'lean ratio':>11} {'polled':>7} {'ratio':>6}" if args.lean else "")
          + (f" {'py read':>8} {'ratio':>6}" if args.python_read else ""))
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for name, make in SIZES.items():
            gap = 0.002 if name == "64 B" else 0.01
            rounds = [run(kinds, make, args.count, gap, tmp) for _ in range(args.rounds)]
            pooled = {k: np.concatenate([r[k] for r in rounds]) for k in kinds}
            raw, ours = pooled["raw"], pooled["earshot"]
            r50, r99 = np.percentile(raw, [50, 99])
            e50, e99 = np.percentile(ours, [50, 99])
            each = [np.median(r["earshot"]) / np.median(r["raw"]) for r in rounds]
            line = (f"{name:<12} {r50:>7.0f}µs {r99:>7.0f}µs {e50:>10.0f}µs {e99:>10.0f}µs {e50 / r50:>9.2f}×"
                    f" {min(each):>7.2f}–{max(each):.2f}×")
            if args.breakdown:
                s50 = float(np.median(pooled["send only"]))
                line += f" {s50:>12.0f}µs {s50 - r50:>10.0f}µs {e50 - s50:>6.0f}µs"
            if args.floor:
                f50 = float(np.median(pooled["floor"]))
                line += f" {f50:>8.0f}µs {f50 / r50:>11.2f}×"
            if args.lean:
                l50 = float(np.median(pooled["lean"]))
                p50 = float(np.median(pooled["lean polled"]))
                line += f" {l50:>7.0f}µs {l50 / r50:>10.2f}× {p50:>5.0f}µs {p50 / r50:>5.2f}×"
            if args.python_read:
                y50 = float(np.median(pooled["python read"]))
                line += f" {y50:>6.0f}µs {y50 / r50:>5.2f}×"
            print(line)
    print(f"load average at the end {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
