"""Publishers and subscribers over ZeroMQ with explicit, counted drop policies.

One output port = one XPUB socket that *binds*; every input connected to it = one SUB
socket. XPUB rather than PUB because it tells the publisher who has subscribed, which
is how a node knows its readers are really there before it sends its first frame (the
zguide "slow joiner" problem: a PUB socket drops everything sent before a subscription
has propagated).

Drops happen in exactly two places, and both are counted:

* in the receiver's own bounded queue (``latest`` keeps 1, ``queue`` keeps N and drops
  the oldest when its reader takes nothing) — counted as ``dropped``;
* inside ZeroMQ when a high-water mark overflows — invisible to the socket API, so every
  publisher numbers its messages and the receiver counts the gaps as ``lost``.

Why not ``ZMQ_CONFLATE`` for ``latest``: it does not support multipart messages. Instead
the receiver drains everything readable each time round the loop and keeps the newest.
(A receive thread was tried and dropped: its extra thread hop tripled the latency of small
messages; a large receive HWM gets the same freshness from ZeroMQ's own I/O thread.)

Memory is bounded in bytes, not messages (a message count means 6 GB of 1080p video on one
stalled reader). Each input has a byte budget (``max_bytes``) and each output one per reader,
by default from the port's message type (:data:`DEFAULT_MAX_BYTES`), set per port in the graph
YAML. An input's queue holds at most ``size`` messages and ``max_bytes`` (it may go over by the one
message that crossed the line; a single larger message is still taken), and its ZeroMQ receive pipe a
quarter of ``max_bytes`` more. An output's send pipe to each reader holds at most ``max_bytes``. The
high-water marks, which ZeroMQ counts in messages, are sized from the budget and the size of the
messages: a writer's at its first message, a reader's from the type's typical size
(:data:`TYPICAL_BYTES`), and never changed after that: libzmq 4.3 stalls a connected pipe for good when
its mark is moved under traffic (lowered below the reads its reader has not yet acknowledged, or raised
while it is full; ``tests/test_backpressure_bytes.py`` shows it). So a port whose messages grow past the
size its marks were set for (a silence fill after a restart, more faces) may hold more than its budget in
its pipes, up to the mark times the larger size; the writer logs that once. A ``queue`` input stops reading from its socket while its
queue is full, so what it cannot hold waits in ZeroMQ instead of being read and thrown away: a reader
that was stopped (a SIGSTOP, a long stall) catches up on its backlog without a loss as long as the
writer's pipe held it (``benchmarks/stall.py``: a renderer stopped 10 s loses no audio). Beyond the
budgets, lossless mode blocks the writer (``XPUB_NODROP``) and realtime mode drops the newest at the
writer, which the reader counts as ``lost``. The price: a ``queue`` reader that stays slower than its
writer lags by up to its budgets before anything is dropped (where that is too long for live output,
a smaller ``max_bytes`` or ``latest``). A reader that takes nothing at all between two drains gets the
declared policy: each new message drops the oldest. ``latest`` reads everything and keeps the newest.

Audio is never dropped silently. An input that carries audio (:data:`AUDIO_TYPES`) notes each
message it drops and each sequence gap as an :class:`AudioGap` (where in the stream, how many
samples); the runtime hands them to the node (``Node.on_audio_gap``: the renderer marks them in its
MP4), they are counted (``dropped``/``lost``, and ``gap_samples``), and each burst of them is logged
as ONE warning with its duration, once the burst is over (``GAP_QUIET_S`` without a drop; a burst
that goes on is logged every ``LOG_EVERY_S``).

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
from pipeline.messages import (AudioChunk, EndOfStream, Message, MessageError, SeparatedAudio, Spectrogram,
                               _python_transport, decode, encode)

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

MiB = 1 << 20
#: the default byte budget of an input's queue and of an output's send pipe to each reader, by message
#: type (a port or the graph YAML may set its own: ``max_bytes``). Video: 36 frames of 640×480 BGR (48 of
#: 640×360, 5 of 1080p). The audio family: 10 ms AudioChunks of 16 kHz mono cost ~1.2 kB each in a pipe
#: and ~2.3 kB in a queue (the decoded objects), so 8 MiB holds ~70 s in a writer's pipe: a reader
#: stopped for seconds loses no audio. Anything else (features, maps, faces): 16 MiB.
DEFAULT_MAX_BYTES: dict[str, int] = {"VideoFrame": 32 * MiB, "AudioChunk": 8 * MiB, "Spectrogram": 8 * MiB,
                                     "SeparatedAudio": 8 * MiB}
OTHER_MAX_BYTES = 16 * MiB
#: what a typical message of a type weighs in a pipe (a 640×480 frame; 10 ms of 16 kHz audio, of its STFT, of
#: two voices): sizes an input's receive pipe, once. High-water marks are never moved on a live pipe: libzmq
#: tells a writer what its reader took only every low-water mark's worth of reads (half the mark the pipe
#: started with), so a mark lowered below the unacknowledged count, or raised on a full pipe, leaves the
#: writer waiting for a word that never comes, and the stream stalls for good.
TYPICAL_BYTES: dict[str, int] = {"VideoFrame": 640 * 480 * 3 + 1024, "AudioChunk": 1300, "Spectrogram": 2800,
                                 "SeparatedAudio": 2200}
OTHER_TYPICAL_BYTES = 4096
#: the message types that carry audio: a drop there is a hole in what people hear, logged and marked
AUDIO_TYPES: tuple[type[Message], ...] = (AudioChunk, Spectrogram, SeparatedAudio)
#: what a message costs beyond its frames' bytes: ZeroMQ's bookkeeping per frame, and in a queue the
#: decoded Python objects (measured: ~1.1 kB for an AudioChunk), so small messages are not counted as free
FRAME_OVERHEAD_BYTES = 128
DECODED_OVERHEAD_BYTES = 1024
#: an input's ZeroMQ receive pipe holds this share of its budget (on top of the queue)
RECEIVE_PIPE_SHARE = 4
#: high-water marks stay within these (messages): 2 so that one message can follow another, the top a
#: sanity cap (bytes decide below it)
MIN_HWM, MAX_HWM = 2, 100_000
#: a drain that read a refill's worth (`low_water_mark`) and found the pipe empty waits up to this long, at most
#: this many times, for ZeroMQ's I/O thread to refill it from the backlog in the kernel (see Subscriber.drain)
REFILL_WAIT_MS, MAX_REFILL_WAITS = 1, 8
#: an audio input's burst of gaps is over after this long without another; then its one line is logged
GAP_QUIET_S = 1.0
#: gaps an input keeps for its node until taken (the runtime takes them after every drain)
MAX_PENDING_GAPS = 256


#: the socket options and flags the drain asks per message, as plain ints: pyzmq turns its enum members into
#: ints on every call (~1 µs each, issue 17)
_EVENTS, _POLLIN, _NOBLOCK = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.NOBLOCK)


def _compiled_read():
    """The compiled read (`pipeline/_fastzmq.pyx`), bound to the libzmq pyzmq loaded, or None: not built (no
    compiler at install), or ``EARSHOT_PYTHON_READ=1`` (`messages._python_transport`). Why it exists: a Python read
    is a dozen cold calls into pyzmq per message, the larger part of what the transport added to a raw hop."""
    if _python_transport():
        return None
    try:
        from zmq.backend.cython import _zmq

        from pipeline import _fastzmq
        _fastzmq._bind(_zmq.__file__)
    except (ImportError, AttributeError, OSError) as exc:
        log.debug("transport: reading in Python (%s)", exc)
        return None
    return _fastzmq.read


#: the next whole message's parts from a socket address, None when none waits (or None: read in Python)
COMPILED_READ = _compiled_read()


def waiter(sockets: list[zmq.Socket]):
    """``wait(timeout_ms)``: block until one of ``sockets`` has a message, or the timeout — a node's loop waits on
    its inputs so. Compiled with the read where it is built (a zmq.Poller is several Python calls a wake-up, run
    cold: issue 17), else a zmq.Poller."""
    if COMPILED_READ is not None:
        from pipeline._fastzmq import WAIT_LIMIT
        from pipeline._fastzmq import wait as compiled_wait

        if len(sockets) <= WAIT_LIMIT:
            sockets = list(sockets)
            return lambda timeout_ms: compiled_wait(sockets, timeout_ms)
    poller = zmq.Poller()
    for s in sockets:
        poller.register(s, zmq.POLLIN)
    return lambda timeout_ms: len(poller.poll(timeout_ms))


def default_max_bytes(kind: type[Message] | None) -> int:
    """The byte budget of a port that carries ``kind`` when neither the node nor the graph sets one."""
    return DEFAULT_MAX_BYTES.get(getattr(kind, "type_name", ""), OTHER_MAX_BYTES)


def typical_bytes(kind: type[Message] | None) -> int:
    return TYPICAL_BYTES.get(getattr(kind, "type_name", ""), OTHER_TYPICAL_BYTES)


def message_bytes(frames: list) -> int:
    """What one multipart message weighs in a ZeroMQ pipe: its frames plus their bookkeeping."""
    total = FRAME_OVERHEAD_BYTES * len(frames)
    for f in frames:  # bytes and zmq.Frame know their length; arrays and memoryviews their nbytes
        total += len(f) if isinstance(f, (bytes, zmq.Frame)) else f.nbytes
    return total


def low_water_mark(hwm: int) -> int:
    """How many reads of a pipe with high-water mark ``hwm`` libzmq lets pass before it tells the pipe's writer
    there is room again (``pipe_t::compute_lwm``): the I/O thread refills a receive pipe in batches this big."""
    return hwm - 1024 if hwm > 2048 else (hwm + 1) // 2


def hwm_for(budget_bytes: int, message_bytes_: int, cap: int) -> int:
    """The high-water mark (messages) that keeps a pipe of such messages within ``budget_bytes``."""
    return max(MIN_HWM, min(cap, budget_bytes // max(1, message_bytes_)))


@dataclass
class AudioGap:
    """Audio an input did not deliver: ``samples`` samples from ``first_sample`` (in the stream's own
    count: ``first_sample``, or ``first_frame`` × hop for spectra) at ``sample_rate_hz``, the first of them
    captured at ``capture_ns``. ``reason``: ``dropped`` (the input's queue policy) or ``lost`` (a sequence
    gap: dropped before it, inside ZeroMQ or upstream; the length is then estimated from the message
    after the gap). ``messages``: how many messages that was."""

    first_sample: int
    samples: int
    sample_rate_hz: int
    capture_ns: int
    messages: int
    reason: str

    @property
    def duration_ms(self) -> float:
        return 1e3 * self.samples / self.sample_rate_hz if self.sample_rate_hz else 0.0


def audio_span(msg: Message) -> tuple[int, int, int] | None:
    """(first sample, samples, sample rate) of a message that carries audio; None for any other."""
    if isinstance(msg, AudioChunk):
        return msg.first_sample, int(msg.samples.shape[0]), msg.sample_rate_hz
    if isinstance(msg, SeparatedAudio):
        return msg.first_sample, int(msg.samples.shape[1]), msg.sample_rate_hz
    if isinstance(msg, Spectrogram):
        return msg.first_frame * msg.hop_length, int(msg.frames.shape[0]) * msg.hop_length, msg.sample_rate_hz
    return None


@dataclass
class InputStats:
    received: int = 0  # accepted into the queue (end-of-stream included)
    delivered: int = 0  # handed to the node
    dropped: int = 0  # discarded by our own queue policy
    lost: int = 0  # sequence gaps: dropped inside ZeroMQ or upstream
    bad: int = 0  # refused before the node saw them: malformed, wrong type, foreign sender
    errors: int = 0  # delivered, but the node's on_message raised on them
    reasons: dict[str, int] = field(default_factory=dict)  # bad + errors, by reason
    gap_samples: int = 0  # audio inputs: samples not delivered (dropped + lost; lost ones estimated)
    gap_bursts: int = 0  # audio inputs: bursts of gaps logged

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

    ``max_bytes``: what the send pipe to each reader may hold (0: the default for ``kind``, the type
    the port sends). The high-water mark is that over the size of the messages sent, at most ``hwm``
    (lossless: at most LOSSLESS_HWM) and at least MIN_HWM; it follows the message size as it changes.
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, *, hwm: int = MAX_HWM, bind: bool = True,
                 lossless: bool = False, wait=None, max_bytes: int = 0,
                 kind: type[Message] | None = None) -> None:
        self.endpoint = endpoint
        self.lossless = lossless
        self.wait = wait or (lambda: time.sleep(0.001) or True)
        self.blocked_s = 0.0  # time spent waiting for a slow reader (lossless)
        self.max_bytes = max_bytes or default_max_bytes(kind)
        self.hwm_cap = min(hwm, LOSSLESS_HWM) if lossless else hwm
        self._sized_for = 0  # the size of the first message sent: the high-water mark is set for it
        self._oversize_said = False
        self.socket = ctx.socket(zmq.XPUB)
        self.hwm = hwm_for(self.max_bytes, typical_bytes(kind), self.hwm_cap)  # until the first send
        self.socket.setsockopt(zmq.SNDHWM, self.hwm)
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
        # message_bytes (header frames are bytes, the rest arrays) and the largest buffer, in one pass (issue 17)
        nbytes, large = FRAME_OVERHEAD_BYTES * len(frames) + len(frames[0]) + len(frames[1]), False
        for array in frames[2:]:
            nbytes += array.nbytes
            if array.nbytes >= ZERO_COPY_MIN_BYTES:
                large = True
        if nbytes > self._sized_for:
            self._fit(nbytes)
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

    def _fit(self, nbytes: int) -> None:
        """Keep the send pipes within the byte budget: the high-water mark is set for the first message,
        when nothing has gone into any pipe (so moving it is safe), and never moved after that (see
        TYPICAL_BYTES). A message much bigger than the first is said once: the budget may be exceeded."""
        if nbytes <= self._sized_for:
            return
        if not self._sized_for:
            self.hwm = hwm_for(self.max_bytes, nbytes, self.hwm_cap)
            self.socket.setsockopt(zmq.SNDHWM, self.hwm)  # nothing written yet: applies safely to every pipe
            self._sized_for = nbytes
        elif self.hwm * nbytes > 2 * self.max_bytes and not self._oversize_said:
            self._oversize_said = True
            log.warning("output %s: a message of %d bytes, its pipes were sized for %d: each may hold up to %.1f MiB "
                        "(budget %.1f MiB) while a reader is behind; the mark is not moved on a live pipe",
                        self.endpoint, nbytes, self._sized_for, self.hwm * nbytes / MiB, self.max_bytes / MiB)

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


def _read_python(sock: zmq.Socket) -> list | None:
    """The next whole message's parts, without blocking, or None: the reader where the compiled one is not built.
    It asks before reading (a NOBLOCK read of an empty socket raises zmq.Again, and building that exception costs
    more than the read), and reads each part as a zmq.Frame whose `more` flag came with it (asking the socket for
    RCVMORE per part costs a call and an enum each); topic and header as bytes, the arrays without a copy."""
    if not sock.getsockopt(_EVENTS) & _POLLIN:
        return None
    try:
        part = sock.recv(_NOBLOCK, copy=False)
    except zmq.Again:
        return None
    frames = [part.bytes]
    if part.more:
        part = sock.recv(_NOBLOCK, copy=False)
        frames.append(part.bytes)
        while part.more:
            part = sock.recv(_NOBLOCK, copy=False)
            frames.append(part)
    return frames


@dataclass
class Subscriber:
    """One input port: a SUB socket plus the bounded queue its policy asks for.

    ``accepts``: the message type the port declares (others are refused); ``upstream``: the node
    wired to it (messages from any other are refused). ``None`` accepts any. With ``ctx`` None
    there is no socket: frames are handed to :meth:`accept` directly (tests, fuzzing).
    ``max_bytes``: the queue's byte budget (0: the default for ``accepts``); ``size`` its bound in
    messages; ``hwm`` a cap on the receive pipe in messages (bytes decide below it).
    """

    ctx: zmq.Context | None
    endpoint: str
    policy: Policy = "queue"
    size: int = 16
    hwm: int = MAX_HWM
    name: str = ""
    #: never drop: read from the socket only while the queue has room, so a full queue pushes
    #: back through ZeroMQ to the writer (`latest` then becomes a short queue)
    lossless: bool = False
    accepts: type[Message] | None = None
    upstream: str | None = None
    max_bytes: int = 0
    stats: InputStats = field(default_factory=InputStats)

    def __post_init__(self) -> None:
        if self.policy not in ("latest", "queue"):
            raise ValueError(f"input {self.name!r}: unknown policy {self.policy!r} (latest | queue)")
        if self.size < 1:
            raise ValueError(f"input {self.name!r}: queue size must be ≥ 1, got {self.size}")
        if self.max_bytes < 0:
            raise ValueError(f"input {self.name!r}: max_bytes must be ≥ 0 (0: the type's default), "
                             f"got {self.max_bytes}")
        self.max_bytes = self.max_bytes or default_max_bytes(self.accepts)
        self.queue: deque[Message] = deque()
        self._sizes: deque[int] = deque()  # what each queued message costs (bytes), beside it
        self.queued_bytes = 0
        self._taken = True  # something was popped since the last drain (or none happened yet)
        self.capacity = 1 if self.policy == "latest" else self.size
        if self.lossless:
            self.capacity, self.hwm = (2 if self.policy == "latest" else self.size), min(self.hwm, LOSSLESS_HWM)
        self.carries_audio = self.accepts is not None and issubclass(self.accepts, AUDIO_TYPES)
        self.gaps: list[AudioGap] = []  # not yet handed to the node (take_gaps)
        self._burst: dict | None = None  # the audio gaps since the last line logged about them
        self._audio_end: dict[str, int] = {}  # audio inputs, per sender: the stream sample after its last message
        self._last_span = (0, 0)  # (samples, rate) of the last audio message: sizes a gap an end-of-stream reveals
        self.ended = False
        self.end_reason = ""
        self._last_seq: dict[str, int] = {}
        self.last_error = ""
        self._last_log = -math.inf  # when a refusal was last logged
        self._unlogged = 0  # refusals since then
        self._traced: set[str] = set()  # exception types whose traceback was logged
        self.socket = None
        self.rcvhwm = hwm_for(self.max_bytes // RECEIVE_PIPE_SHARE, typical_bytes(self.accepts), self.hwm)
        self._refill = low_water_mark(self.rcvhwm)  # reads between ZeroMQ's refills of the receive pipe
        if self.ctx is None:
            return
        self.socket = self.ctx.socket(zmq.SUB)
        # A generous receive pipe on purpose (a quarter of the input's byte budget): ZeroMQ's I/O
        # thread keeps moving frames out of the kernel into it while the node computes, so each drain
        # sees everything up to *now* and `latest` really is the newest. With a tiny one the newest
        # frames would wait in the kernel and the drain would hand over stale ones.
        self.socket.setsockopt(zmq.RCVHWM, self.rcvhwm)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        secure_socket(self.socket, self.endpoint, server=False)  # CURVE where the endpoint leaves the machine
        self.socket.connect(self.endpoint)

    @property
    def full(self) -> bool:
        """The queue is at its bound: ``size`` messages, or ``max_bytes`` (which the last message may
        have crossed)."""
        return len(self.queue) >= self.capacity or self.queued_bytes >= self.max_bytes

    def drain(self) -> int:
        """Read what the queue can take now. Returns messages read.

        ``latest`` (realtime) reads everything and keeps the newest. ``queue`` and lossless inputs read
        while the queue has room and leave the rest in ZeroMQ (its pipes are bounded in bytes too):
        lossless, the writer then blocks; realtime, a reader that keeps taking catches up without a
        loss, and only past the writer's budget are the newest dropped (counted as ``lost``). A queue
        still full from the last drain, with nothing taken from it since, has a reader that is not
        reading at all: there the declared policy applies and each new message drops the oldest."""
        if self._burst is not None:
            self.log_gaps()
        n = 0
        read_all = not self.lossless and (self.policy == "latest" or (self.full and not self._taken))
        self._taken = False
        sock = self.socket
        read, address = (COMPILED_READ, sock.underlying) if COMPILED_READ is not None else (_read_python, sock)
        refills = 0
        queue, capacity, max_bytes = self.queue, self.capacity, self.max_bytes  # `full`, inlined: the hot loop
        while read_all or (len(queue) < capacity and self.queued_bytes < max_bytes):
            frames = read(address)
            if frames is None:
                # A drain that read a refill's worth may have a backlog behind it: ZeroMQ's I/O thread hears
                # of room in the receive pipe only every low-water mark's worth of reads, and refills it from
                # the kernel a moment later. Wait for that moment (a little, a few times), so a `latest` input
                # really ends on the newest (waiting only after a whole pipe's worth left a small pipe, 9
                # frames, read 5 per drain behind a 200 Hz writer: tests/test_runtime.py).
                if n < self._refill * (refills + 1) or refills >= MAX_REFILL_WAITS or not sock.poll(REFILL_WAIT_MS):
                    return n
                refills += 1
                continue
            n += 1
            self.accept(frames)
        return n

    def accept(self, frames: list) -> bool:
        """Decode one multipart message and queue it, or count why not. True if queued (or an end)."""
        nbytes = message_bytes(frames)
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
        lost = self._count_gap(msg)
        if isinstance(msg, EndOfStream):
            self.stats.received += 1
            self.ended, self.end_reason = True, msg.reason
            if lost and self.carries_audio and self._last_span[1]:  # what it never got before the end
                n, rate = self._last_span
                end = self._audio_end.get(msg.source, 0)
                self._note_gap(AudioGap(end, lost * n, rate, msg.capture_ns, lost, "lost"))
            return True
        if self.accepts is not None and not isinstance(msg, self.accepts):
            self.refuse(f"wrong type: {msg.type_name}", f"a {msg.type_name}, this input takes {self.accepts.type_name}")
            return False
        self.stats.received += 1
        if self.carries_audio:
            self._audio_arrived(msg, lost)
        cost = nbytes + DECODED_OVERHEAD_BYTES
        while self.queue and self.full:
            old = self.queue.popleft()
            self.queued_bytes -= self._sizes.popleft()
            self.stats.dropped += 1
            if self.carries_audio:
                first, n, rate = audio_span(old)
                self._note_gap(AudioGap(first, n, rate, old.capture_ns, 1, "dropped"))
        self.queue.append(msg)
        self._sizes.append(cost)
        self.queued_bytes += cost
        return True

    # -- audio gaps ------------------------------------------------------------------------

    def _audio_arrived(self, msg: Message, lost: int) -> None:
        """Note where this sender's audio stands; a sequence gap before this message is a gap in it,
        as long as the samples missing between the last message's end and this one's start (or, if
        those do not say, ``lost`` messages of this one's length)."""
        first, n, rate = audio_span(msg)
        end = self._audio_end.get(msg.source)
        self._audio_end[msg.source] = first + n
        self._last_span = (n, rate)
        if not lost:
            return
        missing = first - end if end is not None and 0 < first - end <= 4 * lost * max(n, 1) else lost * n
        capture_ns = msg.capture_ns - round(missing * 1e9 / rate) if msg.capture_ns else 0
        self._note_gap(AudioGap(first - missing, missing, rate, capture_ns, lost, "lost"))

    def _note_gap(self, gap: AudioGap) -> None:
        self.stats.gap_samples += gap.samples
        last = self.gaps[-1] if self.gaps else None
        if last is not None and last.reason == gap.reason and last.first_sample + last.samples == gap.first_sample:
            last.samples += gap.samples  # the next chunk of the same hole
            last.messages += gap.messages
        else:
            self.gaps.append(gap)
            del self.gaps[:-MAX_PENDING_GAPS]  # nobody takes them (a test feeding accept()): keep the newest
        now = time.monotonic()
        burst = self._burst
        if burst is None:
            burst = self._burst = {"since": now, "samples": 0, "dropped": 0, "lost": 0, "rate": gap.sample_rate_hz}
        burst["last"] = now
        burst["samples"] += gap.samples
        burst[gap.reason] += gap.messages

    def take_gaps(self) -> list[AudioGap]:
        """The audio gaps found since the last call (merged where one continues another), for the node."""
        gaps, self.gaps = self.gaps, []
        return gaps

    def log_gaps(self, force: bool = False) -> None:
        """Log the burst of audio gaps in ONE line once it is over (``GAP_QUIET_S`` without another),
        or every LOG_EVERY_S while it goes on, or now (``force``: closing)."""
        burst = self._burst
        if burst is None:
            return
        now = time.monotonic()
        if not (force or now - burst["last"] >= GAP_QUIET_S or now - burst["since"] >= LOG_EVERY_S):
            return
        self._burst = None
        self.stats.gap_bursts += 1
        rate, samples = burst["rate"], burst["samples"]
        log.warning("input %s: audio gap of %.0f ms (%d samples at %d Hz) not delivered: %d message(s) dropped by "
                    "the queue, %d lost before it (sequence gaps), over %.1f s%s", self.name,
                    1e3 * samples / rate if rate else 0.0, samples, rate, burst["dropped"], burst["lost"],
                    burst["last"] - burst["since"], "" if now - burst["last"] >= GAP_QUIET_S or force
                    else "; still going on")

    # -- refusals --------------------------------------------------------------------------

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

    def _count_gap(self, msg: Message) -> int:
        """Count a sequence gap before ``msg`` as ``lost``; returns how many messages it was."""
        last = self._last_seq.get(msg.source)
        lost = msg.seq - last - 1 if last is not None and msg.seq > last + 1 else 0
        self.stats.lost += lost
        if last is None and len(self._last_seq) >= MAX_SENDERS:  # unwired input: do not grow per sender
            self._last_seq.clear()
            self._audio_end.clear()
        # seq going backwards means the upstream node restarted: start counting afresh.
        self._last_seq[msg.source] = msg.seq
        return lost

    def pop(self) -> Message | None:
        if not self.queue:
            return None
        self.stats.delivered += 1
        self._taken = True
        self.queued_bytes -= self._sizes.popleft()
        return self.queue.popleft()

    @property
    def finished(self) -> bool:
        return self.ended and not self.queue

    def close(self) -> None:
        self.log_gaps(force=True)
        if self.socket is not None:
            self.socket.close(linger=0)
