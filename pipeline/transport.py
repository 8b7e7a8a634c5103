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
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import zmq

from pipeline.messages import EndOfStream, Message, MessageError, decode, encode

log = logging.getLogger(__name__)

Policy = Literal["latest", "queue"]

#: Below pyzmq's copy threshold (64 kB) a send copies anyway; zero-copy also costs a tracker
#: per message, so it is used only for buffers large enough that skipping the memcpy of a
#: whole frame pays (a 640x480 BGR frame is 900 kB).
ZERO_COPY_MIN_BYTES = 256 * 1024


@dataclass
class InputStats:
    received: int = 0
    delivered: int = 0
    dropped: int = 0  # discarded by our own queue policy
    lost: int = 0  # sequence gaps: dropped inside ZeroMQ or upstream
    bad: int = 0  # frames that failed to decode


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
    """One input port: a SUB socket plus the bounded queue its policy asks for."""

    ctx: zmq.Context
    endpoint: str
    policy: Policy = "queue"
    size: int = 16
    hwm: int = 1000
    name: str = ""
    #: never drop: read from the socket only while the queue has room, so a full queue pushes
    #: back through ZeroMQ to the writer (`latest` then becomes a short queue)
    lossless: bool = False
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
        self.socket = self.ctx.socket(zmq.SUB)
        # A generous receive HWM on purpose: ZeroMQ's I/O thread keeps moving frames out of
        # the kernel into this pipe while the node computes, so each drain sees everything
        # up to *now* and `latest` really is the newest. With a small HWM the newest frames
        # would wait in the kernel and the drain would hand over stale ones. Memory stays
        # bounded by the HWM and by the heartbeat timeout that restarts a stalled node.
        self.socket.setsockopt(zmq.RCVHWM, self.hwm)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        self.socket.connect(self.endpoint)
        self.ended = False
        self.end_reason = ""
        self._last_seq: dict[str, int] = {}
        self.last_error = ""

    def drain(self) -> int:
        """Read everything readable now into the bounded queue. Returns messages read."""
        n = 0
        while not (self.lossless and len(self.queue) >= self.capacity):
            try:
                frames = self.socket.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return n
            n += 1
            self._accept(frames)
        return n

    def _accept(self, frames: list) -> None:
        try:
            msg = decode(frames)
        except MessageError as exc:
            self.stats.bad += 1
            self.last_error = str(exc)
            if self.stats.bad <= 5 or self.stats.bad % 100 == 0:
                log.warning("input %s: rejected malformed message #%d: %s", self.name, self.stats.bad, exc)
            return
        self.stats.received += 1
        self._count_gap(msg)
        if isinstance(msg, EndOfStream):
            self.ended, self.end_reason = True, msg.reason
            return
        if len(self.queue) >= self.capacity:
            self.queue.popleft()
            self.stats.dropped += 1
        self.queue.append(msg)

    def _count_gap(self, msg: Message) -> None:
        last = self._last_seq.get(msg.source)
        if last is not None and msg.seq > last + 1:
            self.stats.lost += msg.seq - last - 1
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
        self.socket.close(linger=0)
