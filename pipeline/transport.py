"""Publishers and subscribers over ZeroMQ with explicit, counted drop policies.

One output port = one XPUB socket that *binds*; every input connected to it = one SUB
socket. XPUB rather than PUB because it tells the publisher who has subscribed, which
is how a node knows its readers are really there before it sends its first frame (the
zguide "slow joiner" problem: a PUB socket drops everything sent before a subscription
has propagated).

Drops happen in exactly two places, and both are counted:

* in the receiver's own bounded queue (``latest`` keeps 1, ``queue`` keeps N and drops
  the oldest) — counted as ``dropped``;
* inside ZeroMQ when a high-water mark overflows — invisible to the socket API, so every
  publisher numbers its messages and the receiver counts the gaps as ``lost``.

Why not ``ZMQ_CONFLATE`` for ``latest``: it does not support multipart messages. Instead
the receiver drains everything readable each time round the loop and keeps the newest.
(A receive thread was tried and dropped: its extra thread hop tripled the latency of small
messages; a large receive HWM gets the same freshness from ZeroMQ's own I/O thread.)

What a reader refuses, it counts, by reason, and never lets through: a frame that does not
decode (``bad``, reason ``malformed: <kind>``, ``non-finite`` or ``out of range``), a message of another type than
the port declares (``wrong type: X``), anything — an end-of-stream included — from another node
than the one wired to the port (``foreign sender``). The node's own failures on a message are
counted beside them as ``errors`` (``pipeline.runner.deliver``). The first refusal of a burst is
logged with its reason; the rest of the burst (``LOG_EVERY_S``) is counted, not logged.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import zmq

from pipeline.keys import secure_socket
from pipeline.messages import EndOfStream, Message, MessageError, decode, encode

log = logging.getLogger(__name__)

Policy = Literal["latest", "queue"]

#: Below pyzmq's copy threshold (64 kB) a send copies anyway; zero-copy also costs a tracker
#: per message, so it is used only for buffers large enough that skipping the memcpy of a
#: whole frame pays (a 640x480 BGR frame is 900 kB).
ZERO_COPY_MIN_BYTES = 256 * 1024


#: an input logs at most one line of refusals per this many seconds (the first of a burst)
LOG_EVERY_S = 10.0
#: distinct reasons an input keeps apart; the words are fixed, but bound the table anyway
MAX_REASONS = 32
#: senders whose sequence an unwired input (no ``upstream``) follows at once
MAX_SENDERS = 32


@dataclass
class InputStats:
    received: int = 0  # accepted into the queue (end-of-stream included)
    delivered: int = 0  # handed to the node
    dropped: int = 0  # discarded by our own queue policy
    lost: int = 0  # sequence gaps: dropped inside ZeroMQ or upstream
    bad: int = 0  # refused before the node saw them: malformed, wrong type, foreign sender
    errors: int = 0  # delivered, but the node's on_message raised on them
    reasons: dict[str, int] = field(default_factory=dict)  # bad + errors, by reason

    def count(self, reason: str, error: bool = False) -> None:
        if error:
            self.errors += 1
        else:
            self.bad += 1
        key = reason if reason in self.reasons or len(self.reasons) < MAX_REASONS else "other"
        self.reasons[key] = self.reasons.get(key, 0) + 1


#: messages in flight per connection in lossless mode, each side: few, so that a stalled reader
#: stops its writer within a handful of frames and memory stays a few frames per connection
LOSSLESS_HWM = 4


class Publisher:
    """Sends messages on one bound endpoint; knows how many subscribers it has.

    ``lossless``: a full reader blocks the send (XPUB_NODROP) instead of dropping; while blocked,
    ``wait`` is called (the runtime keeps heartbeating there) until it returns False (stopping).
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, *, hwm: int = 1000, bind: bool = True,
                 lossless: bool = False, wait=None) -> None:
        self.endpoint = endpoint
        self.lossless = lossless
        self.wait = wait or (lambda: time.sleep(0.001) or True)
        self.blocked_s = 0.0  # time spent waiting for a slow reader (lossless)
        self.socket = ctx.socket(zmq.XPUB)
        self.socket.setsockopt(zmq.SNDHWM, LOSSLESS_HWM if lossless else hwm)
        self.socket.setsockopt(zmq.XPUB_NODROP, int(lossless))
        self.socket.setsockopt(zmq.XPUB_VERBOSER, 1)  # see every (un)subscribe, even duplicates
        self.socket.setsockopt(zmq.LINGER, 0)
        secure_socket(self.socket, endpoint, server=bind)  # CURVE where the endpoint leaves the machine
        if bind:
            self.socket.bind(endpoint)
            # tcp://host:0 asks the OS for a port: remember the one we got.
            self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        else:
            self.socket.connect(endpoint)
        self.subscribers = 0
        self.sent = 0
        self._seq = 0

    def poll_subscriptions(self, timeout_ms: int = 0) -> int:
        """Consume pending (un)subscribe notifications; returns the subscriber count."""
        while self.socket.poll(timeout_ms, zmq.POLLIN):
            event = self.socket.recv()
            if event[:1] == b"\x01":
                self.subscribers += 1
            elif event[:1] == b"\x00":
                self.subscribers = max(0, self.subscribers - 1)
            timeout_ms = 0
        return self.subscribers

    def wait_for_subscribers(self, count: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.poll_subscriptions() < count:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.poll_subscriptions(int(min(left, 0.05) * 1000))
        return True

    @property
    def next_seq(self) -> int:
        """The sequence number the next message gets. A restarted node sets it to go on after its
        previous process (``pipeline.runner``), so readers see what it never sent as a gap (``lost``)."""
        return self._seq

    @next_seq.setter
    def next_seq(self, seq: int) -> None:
        self._seq = seq

    def _numbered(self, msg: Message, source: str) -> list:
        """Stamp the next sequence number (and source) and encode."""
        msg.seq = self._seq
        if source:
            msg.source = source
        return encode(msg)

    def send(self, msg: Message, source: str = "") -> None:
        """Number and send. Realtime: never blocks (a full HWM drops, and the reader sees the gap).
        Lossless: waits for room, calling ``wait`` meanwhile; gives up only when it says stop."""
        frames = self._numbered(msg, source)
        self._seq += 1
        large = any(f.nbytes >= ZERO_COPY_MIN_BYTES for f in frames[2:])
        t0 = None
        while True:
            try:
                self.socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=not large)
                self.sent += 1
                break
            except zmq.Again:  # realtime: only with no subscribers at all on some transports
                if not self.lossless:
                    break
                t0 = t0 or time.perf_counter()
                if not self.wait():
                    break
        if t0 is not None:
            self.blocked_s += time.perf_counter() - t0

    def send_reliably(self, msg: Message, source: str = "", timeout_s: float = 2.0) -> bool:
        """Send one message that must not be dropped (end of stream): wait for room instead.

        XPUB_NODROP makes a full high-water mark raise EAGAIN rather than drop silently;
        it is switched on only for this send, so data keeps its drop-not-block policy.
        """
        self.socket.setsockopt(zmq.XPUB_NODROP, 1)
        deadline = time.monotonic() + timeout_s
        try:
            frames = self._numbered(msg, source)
            while True:
                try:
                    self.socket.send_multipart(frames, flags=zmq.NOBLOCK)
                    self._seq += 1
                    self.sent += 1
                    return True
                except zmq.Again:
                    if time.monotonic() > deadline:
                        return False
                    time.sleep(0.005)
        finally:
            self.socket.setsockopt(zmq.XPUB_NODROP, int(self.lossless))

    def wait_for_readers_to_leave(self, timeout_s: float) -> bool:
        """After the end-of-stream: stay connected until every reader has unsubscribed.

        A reader throttled by its own high-water mark would lose what is still in the
        kernel buffer if we closed the connection under it, end-of-stream included.
        """
        deadline = time.monotonic() + timeout_s
        while self.poll_subscriptions(20) > 0:
            if time.monotonic() > deadline:
                return False
        return True

    def close(self, linger_ms: int = 1000) -> None:
        """Give queued frames (the last data, the end-of-stream) a moment to leave."""
        self.socket.close(linger=linger_ms)


@dataclass
class Subscriber:
    """One input port: a SUB socket plus the bounded queue its policy asks for.

    ``accepts``: the message type the port declares (others are refused); ``upstream``: the node
    wired to it (messages from any other are refused). ``None`` accepts any. With ``ctx`` None
    there is no socket: frames are handed to :meth:`accept` directly (tests, fuzzing).
    """

    ctx: zmq.Context | None
    endpoint: str
    policy: Policy = "queue"
    size: int = 16
    hwm: int = 1000
    name: str = ""
    #: never drop: read from the socket only while the queue has room, so a full queue pushes
    #: back through ZeroMQ to the writer (`latest` then becomes a short queue)
    lossless: bool = False
    accepts: type[Message] | None = None
    upstream: str | None = None
    stats: InputStats = field(default_factory=InputStats)

    def __post_init__(self) -> None:
        if self.policy not in ("latest", "queue"):
            raise ValueError(f"input {self.name!r}: unknown policy {self.policy!r} (latest | queue)")
        if self.size < 1:
            raise ValueError(f"input {self.name!r}: queue size must be ≥ 1, got {self.size}")
        self.queue: deque[Message] = deque()
        self.capacity = 1 if self.policy == "latest" else self.size
        if self.lossless:
            self.capacity, self.hwm = (2 if self.policy == "latest" else self.size), LOSSLESS_HWM
        self.ended = False
        self.end_reason = ""
        self._last_seq: dict[str, int] = {}
        self.last_error = ""
        self._last_log = -math.inf  # when a refusal was last logged
        self._unlogged = 0  # refusals since then
        self._traced: set[str] = set()  # exception types whose traceback was logged
        self.socket = None
        if self.ctx is None:
            return
        self.socket = self.ctx.socket(zmq.SUB)
        # A generous receive HWM on purpose: ZeroMQ's I/O thread keeps moving frames out of
        # the kernel into this pipe while the node computes, so each drain sees everything
        # up to *now* and `latest` really is the newest. With a small HWM the newest frames
        # would wait in the kernel and the drain would hand over stale ones. Memory stays
        # bounded by the HWM and by the heartbeat timeout that restarts a stalled node.
        self.socket.setsockopt(zmq.RCVHWM, self.hwm)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        secure_socket(self.socket, self.endpoint, server=False)  # CURVE where the endpoint leaves the machine
        self.socket.connect(self.endpoint)

    def drain(self) -> int:
        """Read everything readable now into the bounded queue. Returns messages read."""
        n = 0
        while not (self.lossless and len(self.queue) >= self.capacity):
            try:
                frames = self.socket.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return n
            n += 1
            self.accept(frames)
        return n

    def accept(self, frames: list) -> bool:
        """Decode one multipart message and queue it, or count why not. True if queued (or an end)."""
        try:
            msg = decode(frames)
        except MessageError as exc:
            kind = getattr(exc, "kind", "schema")
            self.refuse(kind if kind in ("non-finite", "out of range") else f"malformed: {kind}", str(exc))
            return False
        if self.upstream is not None and msg.source != self.upstream:
            what = "an end-of-stream" if isinstance(msg, EndOfStream) else f"a {msg.type_name}"
            self.refuse("foreign sender", f"{what} from {msg.source[:40]!r}, this input is fed by {self.upstream!r}")
            return False
        self._count_gap(msg)
        if isinstance(msg, EndOfStream):
            self.stats.received += 1
            self.ended, self.end_reason = True, msg.reason
            return True
        if self.accepts is not None and not isinstance(msg, self.accepts):
            self.refuse(f"wrong type: {msg.type_name}", f"a {msg.type_name}, this input takes {self.accepts.type_name}")
            return False
        self.stats.received += 1
        if len(self.queue) >= self.capacity:
            self.queue.popleft()
            self.stats.dropped += 1
        self.queue.append(msg)
        return True

    def refuse(self, reason: str, detail: str, *, error: bool = False, exc: BaseException | None = None) -> None:
        """Count one refused (or, ``error``, failed) message under ``reason`` and log the first of a burst.
        ``exc``: an unexpected exception, whose traceback is logged the first time per type on this input."""
        self.stats.count(reason, error)
        self.last_error = detail
        now = time.monotonic()
        if exc is not None and reason not in self._traced and len(self._traced) < MAX_REASONS:
            self._traced.add(reason)
            log.error("input %s: %s (the first %s here: a bug? later ones are counted)", self.name, detail, reason,
                      exc_info=exc)
        elif now - self._last_log >= LOG_EVERY_S:
            more = f"; {self._unlogged} more since the last line" if self._unlogged else ""
            log.warning("input %s: refused a message (%s): %s%s. Refusals in the next %.0f s are only counted",
                        self.name, reason, detail, more, LOG_EVERY_S)
        else:
            self._unlogged += 1
            return
        self._last_log, self._unlogged = now, 0

    def _count_gap(self, msg: Message) -> None:
        last = self._last_seq.get(msg.source)
        if last is not None and msg.seq > last + 1:
            self.stats.lost += msg.seq - last - 1
        if last is None and len(self._last_seq) >= MAX_SENDERS:  # unwired input: do not grow per sender
            self._last_seq.clear()
        # seq going backwards means the upstream node restarted: start counting afresh.
        self._last_seq[msg.source] = msg.seq

    def pop(self) -> Message | None:
        if not self.queue:
            return None
        self.stats.delivered += 1
        return self.queue.popleft()

    @property
    def finished(self) -> bool:
        return self.ended and not self.queue

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close(linger=0)
