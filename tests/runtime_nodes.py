"""Small but real nodes for exercising the runtime in multi-process tests.

They run in their own processes under the real supervisor, so they record what they
saw into files the test reads afterwards.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.messages import AudioChunk, VideoFrame
from pipeline.node import BadInput, Input, Node, Output


class Ticker(Node):
    """Emits numbered frames at a fixed rate; ``count`` 0 means forever."""

    @dataclass
    class Params:
        rate_hz: float = 100.0
        count: int = 0
        height: int = 8
        width: int = 8

    outputs = {"frames": Output(VideoFrame)}

    def open(self) -> None:
        self.index = 0
        self.next_ns = 0

    def step(self) -> bool:
        if self.params.count and self.index >= self.params.count:
            return False
        if not self.next_ns:
            self.next_ns = time.monotonic_ns()
        if not self.sleep_until(self.next_ns):
            return False
        image = np.full((self.params.height, self.params.width, 3), self.index % 256, np.uint8)
        self.send("frames", VideoFrame(image=image, frame_index=self.index, capture_ns=time.monotonic_ns()))
        self.index += 1
        self.next_ns += int(1e9 / self.params.rate_hz)
        return True


class AudioTicker(Node):
    """Emits numbered audio chunks as fast as asked; ``count`` chunks then ends."""

    @dataclass
    class Params:
        count: int = 100
        rate_hz: float = 1000.0

    outputs = {"audio": Output(AudioChunk)}

    def open(self) -> None:
        self.index = 0

    def step(self) -> bool:
        if self.index >= self.params.count:
            return False
        self.send("audio", AudioChunk(samples=np.full(160, self.index, np.float32), first_sample=160 * self.index,
                                      capture_ns=time.monotonic_ns()))
        self.index += 1
        time.sleep(1 / self.params.rate_hz)
        return True


class Recorder(Node):
    """Writes the frame indices it received (and when) to ``path`` as JSON lines."""

    @dataclass
    class Params:
        path: str = ""
        delay_s: float = 0.0  # simulate a slow consumer
        reject_odd: bool = False  # raise BadInput on odd indices, to test error counting

    inputs = {"frames": Input(VideoFrame, policy="latest"), "audio": Input(AudioChunk, policy="queue", size=4)}

    def open(self) -> None:
        self.file = open(self.params.path, "a", buffering=1)
        self.file.write(json.dumps({"pid": os.getpid(), "event": "open"}) + "\n")

    def on_message(self, port: str, msg) -> None:
        index = msg.frame_index if port == "frames" else int(msg.samples[0])
        if self.params.reject_odd and index % 2:
            raise BadInput(f"odd index {index}")
        self.file.write(json.dumps({"port": port, "index": index, "seq": msg.seq,
                                    "age_ms": (time.monotonic_ns() - msg.capture_ns) / 1e6}) + "\n")
        if self.params.delay_s:
            time.sleep(self.params.delay_s)

    def on_end(self) -> None:
        self.file.write(json.dumps({"event": "end"}) + "\n")

    def close(self) -> None:
        self.file.close()


class Relay(Node):
    """Passes frames through unchanged (a middle node, so restarts can be tested)."""

    inputs = {"frames": Input(VideoFrame, policy="queue", size=8)}
    outputs = {"frames": Output(VideoFrame)}

    def on_message(self, port: str, msg) -> None:
        self.send("frames", VideoFrame(image=msg.image, frame_index=msg.frame_index, capture_ns=msg.capture_ns))


class Pairer(Node):
    """Records, for each ``fast`` frame, the newest ``slow`` frame it was paired with (lossless sync)."""

    @dataclass
    class Params:
        path: str = ""

    inputs = {"fast": Input(VideoFrame, policy="queue", size=4, waits_for=("slow",)),
              "slow": Input(VideoFrame, policy="latest")}

    def open(self) -> None:
        self.file = open(self.params.path, "a", buffering=1)
        self.slow_ns = -1

    def on_message(self, port: str, msg) -> None:
        if port == "slow":
            self.slow_ns = msg.capture_ns
        else:
            self.file.write(json.dumps({"index": msg.frame_index, "capture_ns": msg.capture_ns,
                                        "slow_ns": self.slow_ns}) + "\n")

    def close(self) -> None:
        self.file.close()


REGISTRY = {
    "pairer": "tests.runtime_nodes:Pairer",
    "ticker": "tests.runtime_nodes:Ticker",
    "audio_ticker": "tests.runtime_nodes:AudioTicker",
    "recorder": "tests.runtime_nodes:Recorder",
    "relay": "tests.runtime_nodes:Relay",
}


def read_records(path: str | Path) -> list[dict]:
    p = Path(path)
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.exists() else []


class Garbler(Node):
    """Interleaves malformed multipart frames with good ones on its output socket."""

    @dataclass
    class Params:
        count: int = 40

    outputs = {"frames": Output(VideoFrame)}

    def open(self) -> None:
        self.index = 0

    def step(self) -> bool:
        if self.index >= self.params.count:
            return False
        socket = self._runtime.publishers["frames"].socket
        good = VideoFrame(image=np.zeros((4, 4, 3), np.uint8), frame_index=self.index, capture_ns=time.monotonic_ns())
        if self.index % 2:
            from pipeline.messages import encode

            frames = [bytes(f) for f in encode(good)]
            bad = [
                [b"VideoFrame", b"{not json", frames[2]],
                [frames[0], frames[1], frames[2][:-5]],  # truncated payload
                [frames[0], frames[1].replace(b'"v":1', b'"v":9'), frames[2]],  # wrong version
                [b"x"],
            ][self.index // 2 % 4]
            socket.send_multipart(bad)
        else:
            self.send("frames", good)
        self.index += 1
        time.sleep(0.005)
        return True


REGISTRY["garbler"] = "tests.runtime_nodes:Garbler"
