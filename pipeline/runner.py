"""One node's process: sockets, start handshake, the loop, heartbeats, shutdown.

Started by the supervisor as ``python -m pipeline.runner RUN_DIR NODE``. The resolved
graph (endpoints included) is read from ``RUN_DIR/graph.json``, written by the
supervisor, so every process agrees on the wiring without re-reading the YAML.

Telemetry goes over two supervisor sockets: nodes PUSH heartbeats to ``telemetry.in``;
the supervisor PUBlishes them, plus its ``start`` command, on ``telemetry.out``.

A node the supervisor restarts (after a crash, a hang, a kill -9) *continues*: what its previous
process must hand on is kept in ``RUN_DIR/carried/NODE`` (:class:`Carry`), so its outputs go on
numbering where the last process stopped, plus what it would have sent while it was down (which
its readers then count as ``lost``), and a file source goes on at the graph's clock
(:meth:`Runtime.resume_at_ns`). The node process also gets the run's id in ``EARSHOT_RUN_ID``,
so a sink can tell a restart within this run (append to its files) from a new run (start them anew).
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import signal
import struct
import sys
import time
from pathlib import Path
from typing import Any

import zmq

from pipeline.graph import GraphSpec, NodeSpec, import_node_class
from pipeline.media_clock import MediaClock, resume_point
from pipeline.messages import Control, EndOfStream, Heartbeat, Message, MessageError, decode, encode
from pipeline.node import BadInput, Node
from pipeline.stats import Rolling
from pipeline.transport import Publisher, Subscriber, waiter


MEDIA_CLOCK_FILE = "media_clock"
#: per node, what its process leaves for the one that replaces it (:class:`Carry`)
CARRY_DIR = "carried"
#: the run's id in every node's environment: a sink appends to the files of its own run after a
#: restart and starts them anew in another run (media/sinks/mp4.py, wav.py read it)
RUN_ID_ENV = "EARSHOT_RUN_ID"


#: how soon an input on this machine (ipc) tries again to reach a writer that went away (a node being
#: restarted), doubling up to the max: ZeroMQ's default (0.1 s plus up to 0.1 s of jitter, every time)
#: made a restarted node wait ~0.1 s more for its readers before it could say ready. Inputs across
#: hosts (tcp) keep ZeroMQ's defaults: a quick retry there is traffic to another machine.
IPC_RECONNECT_IVL_MS, IPC_RECONNECT_IVL_MAX_MS = 10, 50


def telemetry_endpoints(run_dir: str | Path) -> tuple[str, str]:
    return f"ipc://{Path(run_dir) / 'telemetry.in'}", f"ipc://{Path(run_dir) / 'telemetry.out'}"


class Carry:
    """What one node's process leaves for the process that replaces it, in ``RUN_DIR/carried/NODE``:
    when it was last alive, the media time a file source last released, per output the next sequence
    number and the mean interval between sends (over the last whole second: outputs that send in
    bursts are measured by their rate, not by the gaps within a burst), and the values the node
    declares in ``Node.carries`` (``carry["name"]``).

    The file is mapped into the process and every update is one aligned 8-byte store into that shared
    mapping: no system call, and the kernel keeps the page when the process is SIGKILLed, so the next
    process reads the last value written, not the last one flushed. ``restarted``: the file was there,
    left by an earlier process of this node in this run.
    """

    ALIVE, RELEASED, HEAD = 0, 1, 2
    NEXT_SEQ, INTERVAL, WINDOW_START, WINDOW_SEQ, PER_OUTPUT = 0, 1, 2, 3, 4
    WINDOW_NS = 1_000_000_000  # the rate of an output is measured over this much time at least
    SLOT = struct.Struct("<q")

    def __init__(self, path: Path, outputs: list[str], names: tuple[str, ...] = ()) -> None:
        self.output_at = {port: self.HEAD + self.PER_OUTPUT * i for i, port in enumerate(outputs)}
        self.name_at = {name: self.HEAD + self.PER_OUTPUT * len(outputs) + i for i, name in enumerate(names)}
        size = 8 * (self.HEAD + self.PER_OUTPUT * len(outputs) + len(names))
        self.restarted = path.is_file() and path.stat().st_size == size
        if not self.restarted:
            path.parent.mkdir(mode=0o700, exist_ok=True)
            values = [0] * (size // 8)
            values[self.RELEASED] = -1
            path.write_bytes(struct.pack(f"<{len(values)}q", *values))
        with open(path, "r+b") as file:
            self._map = mmap.mmap(file.fileno(), size)

    def _get(self, slot: int) -> int:
        return self.SLOT.unpack_from(self._map, 8 * slot)[0]

    def _set(self, slot: int, value: int) -> None:
        self.SLOT.pack_into(self._map, 8 * slot, value)

    def __getitem__(self, name: str) -> int:
        return self._get(self.name_at[name])

    def __setitem__(self, name: str, value: int) -> None:
        self._set(self.name_at[name], int(value))

    def alive(self, now_ns: int) -> None:
        self._set(self.ALIVE, now_ns)

    @property
    def alive_ns(self) -> int:
        return self._get(self.ALIVE)

    @property
    def released_ns(self) -> int:
        """The media time a file source last released (-1: none yet)."""
        return self._get(self.RELEASED)

    @released_ns.setter
    def released_ns(self, media_ns: int) -> None:
        self._set(self.RELEASED, media_ns)

    def sending(self, port: str, next_seq: int, now_ns: int) -> None:
        """Note a message about to go out on ``port``; ``next_seq`` is the number after its own."""
        at = self.output_at[port]
        start = self._get(at + self.WINDOW_START)
        if not start or now_ns - start >= self.WINDOW_NS:
            if start:  # a second or more since the window began: its mean interval is the output's rate
                sent = max(1, next_seq - 1 - self._get(at + self.WINDOW_SEQ))
                self._set(at + self.INTERVAL, (now_ns - start) // sent)
            self._set(at + self.WINDOW_START, now_ns)
            self._set(at + self.WINDOW_SEQ, next_seq - 1)
        self._set(at + self.NEXT_SEQ, next_seq)

    def new_window(self, port: str) -> None:
        """A restarted process measures its own rate (its numbers jumped; its predecessor's time is not its)."""
        self._set(self.output_at[port] + self.WINDOW_START, 0)

    def output(self, port: str) -> tuple[int, int]:
        """(next sequence number, mean interval between sends in ns; 0 if unknown) of ``port``."""
        at = self.output_at[port]
        return self._get(at + self.NEXT_SEQ), self._get(at + self.INTERVAL)

    def close(self) -> None:
        self._map.close()


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
        self.node_cls = cls = import_node_class(spec.impl)
        # byte budgets: the graph's, else the node's declaration, else the message type's default (0)
        self.publishers = {
            port: Publisher(self.ctx, ep, lossless=self.lossless, wait=self._wait_for_reader,
                            kind=cls.outputs[port].type if port in cls.outputs else None,
                            max_bytes=spec.output_bytes.get(port, 0) or
                            (cls.outputs[port].max_bytes if port in cls.outputs else 0))
            for port, ep in spec.endpoints.items()}
        src = graph.nodes
        # each input takes only its declared type, and only from the node wired to it
        self.subscribers = {}
        for port, i in spec.inputs.items():
            endpoint = src[i.from_node].endpoints[i.from_port]
            local = endpoint.startswith("ipc://")
            # the context's defaults reach the socket the Subscriber makes and connects right away
            self.ctx.setsockopt(zmq.RECONNECT_IVL, IPC_RECONNECT_IVL_MS if local else 100)
            self.ctx.setsockopt(zmq.RECONNECT_IVL_MAX, IPC_RECONNECT_IVL_MAX_MS if local else 0)
            self.subscribers[port] = Subscriber(
                self.ctx, endpoint, policy=i.policy, size=i.size, name=f"{spec.name}.{port}", lossless=self.lossless,
                accepts=cls.inputs[port].type if port in cls.inputs else None, upstream=i.from_node,
                max_bytes=i.max_bytes or (cls.inputs[port].max_bytes if port in cls.inputs else 0))
        for option in (zmq.RECONNECT_IVL, zmq.RECONNECT_IVL_MAX):  # the other sockets: ZeroMQ's defaults
            self.ctx.sockopts.pop(option, None)
        #: lossless file sources advance together (pipeline/media_clock.py)
        self.clock = MediaClock(Path(run_dir) / MEDIA_CLOCK_FILE, graph.sources, spec.name) \
            if self.lossless and not spec.inputs else None
        self.carry = Carry(Path(run_dir) / CARRY_DIR / spec.name, list(self.publishers), cls.carries)
        #: an earlier process of this node ran in this run (and crashed, hung or was killed)
        self.restarted = self.carry.restarted
        self.predecessor_alive_ns = self.carry.alive_ns  # read before this process marks itself alive
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
        #: the first output sent (a sink: the first input taken) is told to the supervisor at once, not
        #: at the next beat: a restarted node is seen back as soon as it is (kill -9 recovery, issue 15)
        self._told_first = False
        self.node: Node | None = None

    # -- called by the node ----------------------------------------------------------------

    def is_wired(self, port: str) -> bool:
        return port in self.subscribers

    def send(self, port: str, msg: Message) -> None:
        pub = self.publishers[port]
        # noted before the send: a kill in between leaves a gap readers count, never a reused number
        self.carry.sending(port, pub.next_seq + 1, time.monotonic_ns())
        pub.send(msg, source=self.spec.name)

    def pace(self, media_ns: int) -> bool:
        """Hold a file source's output at media time ``media_ns`` (since the epoch) until it is due:
        realtime, when the wall clock gets there; lossless, when the other sources have caught up.
        False if the node is stopping."""
        if self.clock is None:
            released = self.node.sleep_until(self.epoch_ns + media_ns)
        else:
            released = self.clock.wait(media_ns, self._wait_for_reader)
        if released:
            self.carry.released_ns = media_ns
        return released

    def resume_at_ns(self) -> int | None:
        """A restarted file source: the first media time (ns since the epoch) to go on from; None on a
        first start. Lossless: just after the last it released (nothing skipped, nothing sent twice);
        realtime: where the graph's clock is now (``pipeline.media_clock.resume_point``). Ask once the
        graph started (in ``step()``): the epoch is known only then."""
        if not self.restarted:
            return None
        return resume_point(self.carry.released_ns, self.epoch_ns, lossless=self.clock is not None)

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
            self._continue_numbering()
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

    def _continue_numbering(self) -> None:
        """A restarted node's outputs go on after the numbers its previous process used, plus the
        messages it would have sent while it was down (the time since it was last alive, at the rate
        each output had), so its readers count those as lost instead of restarting their count.
        A lossless file source resumes right after what it released (`resume_at_ns`): it skips
        nothing, so its numbers go on exactly."""
        if not self.restarted:
            return
        exact = self.clock is not None and self.node.paced_by_media
        down_ns = max(0, time.monotonic_ns() - self.predecessor_alive_ns)
        for port, pub in self.publishers.items():
            next_seq, interval_ns = self.carry.output(port)
            missed = 0 if exact or interval_ns <= 0 else down_ns // interval_ns
            pub.next_seq = next_seq + missed
            self.carry.new_window(port)
            self.log.info("restarted: output %s goes on at seq %d (%d not sent in %.1f s down)",
                          port, pub.next_seq, missed, down_ns / 1e9)

    def _recv_control(self) -> Message | None:
        try:
            return decode(self.control.recv_multipart(copy=False))
        except MessageError as exc:
            self.log.warning("bad telemetry message: %s", exc)
            return None

    def _loop(self, node: Node) -> None:
        wait = waiter([sub.socket for sub in self.subscribers.values()])
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
                wait(int(self.TICK_S * 1000))
                for port, sub in self.subscribers.items():
                    sub.drain()
                    if sub.gaps:
                        self._hand_gaps(node, port, sub)
            if node.wants_telemetry:
                self._drain_telemetry(node)
            self._deliver(node, compute)
            node.tick()
            self.heartbeat(force=not self._told_first and self._produced())
            if self.subscribers and all(sub.finished for sub in self.subscribers.values()):
                return

    def _hand_gaps(self, node: Node, port: str, sub: Subscriber) -> None:
        """Tell the node where its audio input has holes (the renderer marks them in its MP4). The
        transport has counted and will log them; a node failing here is counted like a bad message."""
        for gap in sub.take_gaps():
            try:
                node.on_audio_gap(port, gap)
            except Exception as exc:  # noqa: BLE001 - one marker's failure is not the node's
                node.count("errors")
                sub.refuse(type(exc).__name__, f"on_audio_gap: {type(exc).__name__}: {str(exc)[:200]}", error=True,
                           exc=exc)

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

    def _produced(self) -> bool:
        """This process sent its first message (a node without outputs: took its first input)."""
        if self.publishers:
            done = any(pub.sent for pub in self.publishers.values())
        else:
            done = any(sub.stats.delivered for sub in self.subscribers.values())
        self._told_first = done
        return done

    def stats(self) -> dict[str, Any]:
        node = self.node
        inputs = {}
        for port, sub in self.subscribers.items():
            s = sub.stats
            inputs[port] = {"received": s.received, "delivered": s.delivered, "dropped": s.dropped,
                            "lost": s.lost, "bad": s.bad, "errors": s.errors, "reasons": dict(s.reasons),
                            "latency_ms": self.latency[port].summary(),
                            "queued_bytes": sub.queued_bytes, "max_bytes": sub.max_bytes}
            if sub.carries_audio:  # audio not delivered, in samples (lost ones estimated), and its bursts
                inputs[port].update(gap_samples=s.gap_samples, gap_bursts=s.gap_bursts)
        out: dict[str, Any] = {"inputs": inputs,
                               "outputs": {p: {"sent": pub.sent, "readers": pub.subscribers,
                                               "blocked_s": round(pub.blocked_s, 3), "hwm": pub.hwm,
                                               "max_bytes": pub.max_bytes}
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
        self.carry.alive(time.monotonic_ns())  # for a successor: when this process was last seen running
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
        self.carry.close()


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
    os.environ[RUN_ID_ENV] = Path(run_dir).resolve().name  # for sinks: same run after a restart, or another
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


# -- the fork server -----------------------------------------------------------------------------

#: how the supervisor starts the fork server (`pipeline.supervisor.ForkServer`): argv[1] is its end of
#: the socket pair
SERVE_FORKS = "import sys; from pipeline.runner import serve_forks; sys.exit(serve_forks(int(sys.argv[1])))"


def serve_forks(fd: int) -> int:
    """The fork server: a process that has imported what every node's process needs (Python itself,
    numpy, ZeroMQ, the runtime: ~0.25 s of CPU, more than a second on a loaded machine) once, and forks
    a node's process from there on request, so a node restarted after a crash or a kill -9 starts from
    its own imports and ``open()`` (issue 15). Every node is forked from it, at the start too.

    It talks to the supervisor over ``fd``, one end of a SOCK_SEQPACKET pair, one JSON message each way:
    in, ``{"node", "run_dir", "env", "cwd"}``; out, ``{"pid"}`` with a pidfd of the child (SCM_RIGHTS,
    so the supervisor signals that process and no other), and ``{"exited", "code"}`` once the child has
    exited (the code as ``subprocess`` gives it: negative for a signal). It reaps its children as they
    exit, and ends when the supervisor closes its end (or dies: it gets SIGTERM then, and its children
    SIGTERM from it). It holds no ZeroMQ context and no thread of its own, so a fork of it is clean.
    """
    import random  # noqa: F401 - the same: each child reseeds it
    import select
    import socket

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the nodes and the supervisor to act on
    sock = socket.socket(fileno=fd)
    children: dict[int, int] = {}  # pidfd → pid
    sock.send(json.dumps({"ready": os.getpid()}).encode())
    while True:
        readable, _, _ = select.select([sock, *children], [], [])
        for ready in readable:
            if ready is sock:
                data = sock.recv(1 << 20)
                if not data:  # the supervisor is done with us
                    return 0
                request = json.loads(data)
                server = os.getpid()
                pid = os.fork()
                if pid == 0:
                    _forked_node(request, sock, list(children), server)  # does not return
                pidfd = os.pidfd_open(pid)
                children[pidfd] = pid
                socket.send_fds(sock, [json.dumps({"pid": pid}).encode()], [pidfd])
            else:
                pid = children.pop(ready)
                _, status = os.waitpid(pid, 0)
                os.close(ready)
                sock.send(json.dumps({"exited": pid, "code": os.waitstatus_to_exitcode(status)}).encode())


def _forked_node(request: dict, sock: Any, pidfds: list[int], server: int) -> None:
    """In a child of the fork server: become the node's process, as ``python -m pipeline.runner RUN_DIR
    NODE`` would be with the request's environment and working directory, and exit with its code."""
    code = 1
    try:
        sock.close()
        for pidfd in pidfds:
            os.close(pidfd)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        die_with_parent(server)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        import random

        import numpy as np

        random.seed()  # not the fork server's state, shared by every node forked from it
        np.random.seed()
        sys.argv = [__file__, request["run_dir"], request["node"]]
        code = main([request["run_dir"], request["node"]])
    except SystemExit as exc:  # a node's ConfigError (2), or a sys.exit anywhere in it
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    except BaseException:  # noqa: BLE001 - as the interpreter would: say it, exit 1
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:  # what an interpreter's exit does: atexit handlers (logging's flush among them), then the streams
            import atexit

            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code if 0 <= code <= 255 else 1)


def _load_prctl():  # -> the libc prctl function, or None
    try:
        import ctypes  # already loaded with numpy: this costs a lookup, not an import

        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


#: resolved once, at import: a child between fork and exec (the supervisor's preexec_fn) should not import
#: or dlopen anything (the supervisor may have other threads, holding the import lock at the fork)
_PRCTL = _load_prctl() if sys.platform.startswith("linux") else None


def die_with_parent(parent: int | None = None) -> None:
    """Linux: have the kernel SIGTERM this process when its parent dies (the supervisor, or the fork server,
    which dies with the supervisor), so no node is orphaned. ``parent``: the pid it must still have; if it
    went before the call, nobody would tell us: exit."""
    if _PRCTL is not None:
        PR_SET_PDEATHSIG = 1
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)
    if parent is not None and os.getppid() != parent:
        os._exit(1)


if __name__ == "__main__":
    sys.exit(main())
