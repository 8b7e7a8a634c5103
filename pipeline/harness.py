"""Run one node in-process, without sockets or a supervisor: for tests and notebooks.

dora-rs tests feed recorded inputs to a node without the daemon; this is the same idea.
Messages still go through the real wire encoding, so a test also proves that what a node
sends is something the transport accepts.
"""

from __future__ import annotations

import time
from typing import Any

from pipeline.messages import Message, decode, encode
from pipeline.node import Node


def _wire(msg: Message) -> list[bytes]:
    """What the receiving process would get: the frames as plain bytes."""
    frames = encode(msg)
    return [*frames[:2], *(memoryview(f).cast("B").tobytes() if f.size else b"" for f in frames[2:])]


class Harness:
    """``with Harness(MyNode, params) as h: h.feed("audio", chunk); h.outputs["level"]``."""

    def __init__(self, node_cls: type[Node], params: dict[str, Any] | None = None, name: str = "node",
                 epoch_ns: int | None = None, wired: set[str] | None = None,
                 telemetry: dict[str, dict] | None = None) -> None:
        self.wired = set(node_cls.inputs) if wired is None else set(wired)
        self.outputs: dict[str, list[Message]] = {port: [] for port in node_cls.outputs}
        self.stopping = False
        self.epoch_ns = time.monotonic_ns() if epoch_ns is None else epoch_ns
        self._seq: dict[str, int] = {}
        self.node = node_cls(name, node_cls.make_params(params), runtime=self)
        self.node.telemetry.update(telemetry or {})

    def is_wired(self, port: str) -> bool:
        return port in self.wired

    # the runtime interface the node talks to
    def send(self, port: str, msg: Message) -> None:
        msg.source = self.node.name
        msg.seq = self._seq.get(port, 0)
        self._seq[port] = msg.seq + 1
        self.outputs[port].append(decode(_wire(msg)))

    def __enter__(self) -> Harness:
        self.node.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.node.close()

    def feed(self, port: str, msg: Message) -> None:
        if port not in self.node.inputs:
            raise KeyError(f"no input port {port!r}")
        self.node.on_message(port, decode(_wire(msg)))
        self.node.tick()

    def run_source(self, max_steps: int = 1_000_000) -> int:
        """Call step() until the source is dry (or max_steps); returns steps taken."""
        for n in range(max_steps):
            if not self.node.step():
                return n + 1
        return max_steps

    def end(self) -> None:
        self.node.on_end()
