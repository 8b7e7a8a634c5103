"""Record every topic of a running graph to an MCAP file, and read it back.

Why MCAP: one indexed, seekable file of timestamped messages per channel, that Foxglove opens and
the `mcap` library reads and writes in a few lines. Each channel is one output (`node/port`); each
message is the exact wire frames the nodes exchanged (`[type, JSON header, *buffers]`, length-
prefixed), so a replay feeds nodes the very bytes they saw, decoded and checked by the same
`decode` as live traffic. ``log_time`` is when the recorder got it, ``publish_time`` its capture time.

    python -m pipeline.recording RUN_DIR OUT.mcap     the recorder process (`launch.py run --record`)
"""

from __future__ import annotations

import json
import signal
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import zmq

ENCODING = "earshot-multipart"  # u32 frame count, then per frame u64 length + bytes
PROFILE = "earshot"


def pack(frames: list[bytes]) -> bytes:
    return b"".join([struct.pack("<I", len(frames)), *(struct.pack("<Q", len(f)) + f for f in frames)])


def unpack(data: bytes) -> list[bytes]:
    count, = struct.unpack_from("<I", data, 0)
    frames, at = [], 4
    for _ in range(count):
        n, = struct.unpack_from("<Q", data, at)
        at += 8
        if at + n > len(data):
            raise ValueError("recording: a message is cut short")
        frames.append(data[at:at + n])
        at += n
    return frames


def record(run_dir: Path, out_path: Path) -> int:
    """Subscribe to every output of the graph in ``run_dir`` and write until each has ended
    (end of stream) or SIGTERM/SIGINT; returns messages written."""
    from mcap.writer import Writer

    graph = json.loads((run_dir / "graph.json").read_text())
    ctx = zmq.Context()
    sockets: dict[zmq.Socket, str] = {}
    for name, node in graph["nodes"].items():
        for port, endpoint in node["endpoints"].items():
            sock = ctx.socket(zmq.SUB)
            sock.setsockopt(zmq.RCVHWM, 0)  # never drop: a recording is a complete copy or nothing
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.connect(endpoint)
            sockets[sock] = f"{name}/{port}"
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    poller = zmq.Poller()
    for sock in sockets:
        poller.register(sock, zmq.POLLIN)
    written, ended = 0, set()
    tmp = out_path.with_suffix(".mcap.part")
    with open(tmp, "wb") as stream:
        writer = Writer(stream)
        writer.start(profile=PROFILE, library="earshot")
        channels: dict[tuple[str, str], int] = {}
        schemas: dict[str, int] = {}
        while not stop and len(ended) < len(sockets):
            for sock, _ in poller.poll(100):
                frames = sock.recv_multipart()
                topic, type_name = sockets[sock], frames[0].decode("ascii", "replace")
                if type_name == "EndOfStream":
                    ended.add(topic)
                if type_name not in schemas:
                    schemas[type_name] = writer.register_schema(name=type_name, encoding="", data=b"")
                if (topic, type_name) not in channels:
                    channels[topic, type_name] = writer.register_channel(
                        topic=topic, message_encoding=ENCODING, schema_id=schemas[type_name])
                try:
                    capture_ns = int(json.loads(frames[1]).get("capture_ns", 0))
                except (ValueError, AttributeError):
                    capture_ns = 0
                writer.add_message(channel_id=channels[topic, type_name], log_time=time.time_ns(),
                                   publish_time=max(0, capture_ns), data=pack(frames))
                written += 1
        writer.finish()
    tmp.replace(out_path)  # a reader never sees a half-written recording
    ctx.destroy(linger=0)
    return written


def read(path: Path) -> Iterator[tuple[str, int, list[bytes]]]:
    """(topic, capture_ns, wire frames) of every message, in recorded order."""
    from mcap.reader import make_reader

    with open(path, "rb") as stream:
        for _schema, channel, message in make_reader(stream).iter_messages(log_time_order=True):
            if channel.message_encoding != ENCODING:
                raise ValueError(f"{path}: channel {channel.topic} is {channel.message_encoding!r}, not {ENCODING!r}")
            yield channel.topic, message.publish_time, unpack(message.data)


if __name__ == "__main__":
    n = record(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"recorded {n} messages to {sys.argv[2]}", file=sys.stderr)
