"""One node's process: sockets, start handshake, the loop, heartbeats, shutdown.

Started by the supervisor as ``python -m pipeline.runner RUN_DIR NODE``. The resolved
graph (endpoints included) is read from ``RUN_DIR/graph.json``, written by the
supervisor, so every process agrees on the wiring without re-reading the YAML.

Telemetry goes over two supervisor sockets: nodes PUSH heartbeats to ``telemetry.in``;
the supervisor PUBlishes them, plus its ``start`` command, on ``telemetry.out``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import zmq

from pipeline.graph import GraphSpec, NodeSpec, import_node_class
from pipeline.media_clock import MediaClock
from pipeline.messages import Control, EndOfStream, Heartbeat, Message, MessageError, decode, encode
from pipeline.node import BadInput, Node
from pipeline.stats import Rolling
from pipeline.transport import Publisher, Subscriber


MEDIA_CLOCK_FILE = "media_clock"


def telemetry_endpoints(run_dir: str | Path) -> tuple[str, str]:
    return f"ipc://{Path(run_dir) / 'telemetry.in'}", f"ipc://{Path(run_dir) / 'telemetry.out'}"


class Runtime:
    """What a node talks to: its publishers, subscribers and the supervisor."""

    TICK_S = 0.02  # how often a node with inputs wakes without input (for tick() and heartbeats)
    SYNC_TIMEOUT_S = 5.0  # lossless: the longest a message waits for the inputs it is paired with

    def __init__(self, graph: GraphSpec, spec: NodeSpec, run_dir: str | Path) -> None:
        self.graph, self.spec = graph, spec
        self.stopping = False
        self.epoch_ns = time.monotonic_ns()
        self.ctx = zmq.Context()
        self.log = logging.getLogger(f"earshot.{spec.name}")
        self.lossless = graph.settings.pace == "lossless"
        self.publishers = {port: Publisher(self.ctx, ep, lossless=self.lossless, wait=self._wait_for_reader)
                           for port, ep in spec.endpoints.items()}
        src = graph.nodes
        self.node_cls = cls = import_node_class(spec.impl)
        # each input takes only its declared type, and only from the node wired to it
        self.subscribers = {
            port: Subscriber(self.ctx, src[i.from_node].endpoints[i.from_port], policy=i.policy, size=i.size,
                             name=f"{spec.name}.{port}", lossless=self.lossless,
                             accepts=cls.inputs[port].type if port in cls.inputs else None, upstream=i.from_node)
            for port, i in spec.inputs.items()
        }
        #: lossless file sources advance together (pipeline/media_clock.py)
        self.clock = MediaClock(Path(run_dir) / MEDIA_CLOCK_FILE, graph.sources, spec.name) \
            if self.lossless and not spec.inputs else None
        tel_in, tel_out = telemetry_endpoints(run_dir)
        self.telemetry_push = self.ctx.socket(zmq.PUSH)
        self.telemetry_push.setsockopt(zmq.SNDHWM, 10)
        self.telemetry_push.setsockopt(zmq.LINGER, 500)
        self.telemetry_push.connect(tel_in)
        self.control = self.ctx.socket(zmq.SUB)
        self.control.setsockopt(zmq.SUBSCRIBE, Control.type_name.encode())
        self.control.setsockopt(zmq.LINGER, 0)
        self.control.connect(tel_out)
        self.latency = {port: Rolling() for port in self.subscribers}
        self.delivered_ns: dict[str, int] = {}  # capture_ns of the last message delivered per input
        self.held_since: dict[str, float] = {}  # lossless: when the head of an input started waiting
        self.state = "starting"
        self._parent = os.getppid()
        self._last_beat = 0.0
        self.node: Node | None = None

    # -- called by the node ----------------------------------------------------------------

    def is_wired(self, port: str) -> bool:
        return port in self.subscribers

    def send(self, port: str, msg: Message) -> None:
        self.publishers[port].send(msg, source=self.spec.name)

    def pace(self, media_ns: int) -> bool:
        """Hold a file source's output at media time ``media_ns`` (since the epoch) until it is due:
        realtime, when the wall clock gets there; lossless, when the other sources have caught up.
        False if the node is stopping."""
        if self.clock is None:
            return self.node.sleep_until(self.epoch_ns + media_ns)
        return self.clock.wait(media_ns, self._wait_for_reader)

    def _wait_for_reader(self) -> bool:
        """While blocked on a slow reader (lossless): stay alive to the supervisor, stop when asked."""
        self.heartbeat()
        time.sleep(0.001)
        return not self.stopping

    # -- lifecycle -----------------------------------------------------------------------

    def run(self) -> int:
        cls = self.node_cls
        self.node = node = cls(self.spec.name, cls.make_params(self.spec.params), runtime=self)
        try:
            node.open()
            if self.clock is not None and not node.paced_by_media:
                self.clock.leave()  # a device source: nobody should wait for it
            self._handshake()
            self.state = "running"
            self._loop(node)
            if self.clock is not None:
                self.clock.leave()  # finished (or stopping): the other sources go on without us
            if self.stopping:
                return 0
            node.on_end()
            self.state = "finished"
            # Only a natural end is announced: a crashed node is restarted, and a stopped
            # graph stops everywhere, so neither should make readers think the stream is over.
            for port, pub in self.publishers.items():
                eos = EndOfStream(capture_ns=time.monotonic_ns(), reason=f"{self.spec.name} finished")
                if not pub.send_reliably(eos, source=self.spec.name):
                    self.log.warning("output %s: a reader did not take the end-of-stream in time", port)
            for port, pub in self.publishers.items():
                if not pub.wait_for_readers_to_leave(self.graph.settings.drain_timeout_s):
                    self.log.info("output %s: %d reader(s) still connected at exit", port, pub.subscribers)
        finally:
            try:
                node.close()
            finally:
                if self.state != "finished":
                    self.state = "stopped" if self.stopping else "failed"
                self.heartbeat(force=True)
                self._close_sockets()
        return 0

    def _handshake(self) -> None:
        """Wait for every reader of our outputs, say ready, wait for the graph's start.

        Waiting for subscriptions is what makes the first frames arrive: a PUB socket
        silently drops whatever it sends before a subscription has propagated.
        """
        timeout = self.graph.settings.start_timeout_s
        for port, pub in self.publishers.items():
            want = self.spec.subscribers.get(port, 0)
            if not pub.wait_for_subscribers(want, timeout):
                self.log.warning("output %s: only %d of %d readers subscribed after %.0f s; starting anyway",
                                 port, pub.subscribers, want, timeout)
        self.state = "ready"
        deadline = time.monotonic() + timeout
        while not self.stopping and time.monotonic() < deadline:
            self.heartbeat(force=True)
            if self.control.poll(100):
                msg = self._recv_control()
                if isinstance(msg, Control) and msg.command == "start":
                    self.epoch_ns = msg.epoch_ns
                    return
        if not self.stopping:
            self.log.warning("no start from the supervisor after %.0f s; starting anyway", timeout)

    def _recv_control(self) -> Message | None:
        try:
            return decode(self.control.recv_multipart(copy=False))
        except MessageError as exc:
            self.log.warning("bad telemetry message: %s", exc)
            return None

    def _loop(self, node: Node) -> None:
        poller = zmq.Poller()
        for sub in self.subscribers.values():
            poller.register(sub.socket, zmq.POLLIN)
        if node.wants_telemetry:  # other nodes' heartbeats, republished by the supervisor
            self.control.setsockopt(zmq.SUBSCRIBE, Heartbeat.type_name.encode())
        is_source = not self.subscribers
        compute = node.stats["compute_ms"]
        while not self.stopping:
            if is_source:
                t0, slept = time.perf_counter(), node.slept_s
                more = node.step()
                compute.add((time.perf_counter() - t0 - (node.slept_s - slept)) * 1e3)
                if not more:
                    return
            else:
                poller.poll(int(self.TICK_S * 1000))
                for sub in self.subscribers.values():
                    sub.drain()
            if node.wants_telemetry:
                self._drain_telemetry(node)
            self._deliver(node, compute)
            node.tick()
            self.heartbeat()
            if self.subscribers and all(sub.finished for sub in self.subscribers.values()):
                return

    def _held(self, node: Node, port: str, sub: Subscriber) -> bool:
        """Lossless: is the head of ``port`` ahead of an input it waits for? A wait longer than
        SYNC_TIMEOUT_S (a path that stopped producing) gives up, counted, so no graph deadlocks."""
        waits = [w for w in node.inputs[port].waits_for if w in self.subscribers and not self.subscribers[w].finished]
        if not self.lossless or not waits or not sub.queue:
            return False
        head_ns = sub.queue[0].capture_ns
        if all(self.delivered_ns.get(w, -1) >= head_ns for w in waits):
            self.held_since.pop(port, None)
            return False
        since = self.held_since.setdefault(port, time.monotonic())
        if time.monotonic() - since > self.SYNC_TIMEOUT_S:
            node.count("sync_timeouts")
            self.held_since.pop(port, None)
            return False
        return True

    def _deliver(self, node: Node, compute: Rolling) -> None:
        # Round-robin over inputs so a busy audio queue cannot starve the video input.
        pending = True
        while pending and not self.stopping:
            pending = False
            for port, sub in self.subscribers.items():
                if self._held(node, port, sub):
                    continue
                msg = sub.pop()
                if msg is None:
                    continue
                self.delivered_ns[port] = msg.capture_ns
                pending = pending or bool(sub.queue)
                now = time.monotonic_ns()
                if msg.capture_ns:
                    self.latency[port].add((now - msg.capture_ns) / 1e6)
                t0 = time.perf_counter()
                deliver(node, port, msg, sub)
                compute.add((time.perf_counter() - t0) * 1e3)

    def _drain_telemetry(self, node: Node) -> None:
        while self.control.poll(0):
            msg = self._recv_control()
            if isinstance(msg, Heartbeat):
                node.telemetry[msg.node] = msg.stats

    # -- heartbeats ----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        node = self.node
        inputs = {}
        for port, sub in self.subscribers.items():
            s = sub.stats
            inputs[port] = {"received": s.received, "delivered": s.delivered, "dropped": s.dropped,
                            "lost": s.lost, "bad": s.bad, "errors": s.errors, "reasons": dict(s.reasons),
                            "latency_ms": self.latency[port].summary()}
        out: dict[str, Any] = {"inputs": inputs,
                               "outputs": {p: {"sent": pub.sent, "readers": pub.subscribers, "blocked_s": round(pub.blocked_s, 3)}
                                           for p, pub in self.publishers.items()}}
        if node is not None:
            out["counters"] = dict(node.counters)
            out.update({name: r.summary() for name, r in node.stats.items()})
            out["artifacts"] = list(getattr(node, "artifacts", []))
            out["summary"] = "; ".join(filter(None, [node.summary(), self.refusals()]))
        return out

    def refusals(self) -> str:
        """What each input refused or failed on, by reason, for the closing summary ("" if nothing)."""
        parts = []
        for port, sub in self.subscribers.items():
            reasons = sorted(sub.stats.reasons.items(), key=lambda item: -item[1])
            if reasons:
                parts.append(f"{port} ({', '.join(f'{n} {reason}' for reason, n in reasons[:4])}"
                             f"{', …' if len(reasons) > 4 else ''})")
        return f"refused {', '.join(parts)}" if parts else ""

    def heartbeat(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_beat < self.graph.settings.heartbeat_s:
            return
        self._last_beat = now
        for pub in self.publishers.values():
            pub.poll_subscriptions()
        if os.getppid() != self._parent:  # the supervisor died: do not linger as an orphan
            self.log.error("supervisor is gone; stopping")
            self.stopping = True
        beat = Heartbeat(node=self.spec.name, pid=os.getpid(), state=self.state, stats=self.stats(),
                         capture_ns=time.monotonic_ns())
        try:
            self.telemetry_push.send_multipart(encode(beat), flags=zmq.NOBLOCK)
        except zmq.Again:
            pass

    def _close_sockets(self) -> None:
        for pub in self.publishers.values():
            pub.close()
        for sub in self.subscribers.values():
            sub.close()
        self.control.close(linger=0)
        self.telemetry_push.close(linger=500)
        self.ctx.term()


def deliver(node: Node, port: str, msg: Message, sub: Subscriber) -> bool:
    """Hand one message to ``node.on_message``; True if it took it.

    Whatever on_message raises — ``BadInput`` for a message the node cannot use, or any other
    Exception (a bug, an engine refusing a shape) — is one message's failure, not the node's: it
    is counted on the input by reason and in the node's ``errors``, the first of a burst is
    logged, and the node goes on. A bug (anything but BadInput / MessageError) also logs its
    traceback the first time per input, so it stays visible. BaseException (Ctrl-C, SystemExit)
    is not caught.
    """
    try:
        node.on_message(port, msg)
        return True
    except Exception as exc:
        node.count("errors")
        expected = isinstance(exc, (BadInput, MessageError))
        reason = "BadInput" if isinstance(exc, BadInput) else type(exc).__name__
        sub.refuse(reason, f"{type(exc).__name__}: {str(exc)[:200]}", error=True, exc=None if expected else exc)
        return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m pipeline.runner RUN_DIR NODE", file=sys.stderr)
        return 2
    run_dir, node_name = argv
    logging.basicConfig(level=os.environ.get("EARSHOT_LOG", "INFO"), stream=sys.stderr,
                        format=f"%(asctime)s {node_name:>14} %(levelname)s %(message)s", datefmt="%H:%M:%S")
    graph = GraphSpec.from_dict(json.loads((Path(run_dir) / "graph.json").read_text()))
    runtime = Runtime(graph, graph.nodes[node_name], run_dir)

    def stop(signum: int, _frame: Any) -> None:
        runtime.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        return runtime.run()
    except Exception:
        logging.getLogger(f"earshot.{node_name}").exception("node %s crashed", node_name)
        return 1


if __name__ == "__main__":
    sys.exit(main())
