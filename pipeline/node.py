"""The base every node is built on: declare ports, then open → loop → close.

A node file reads like a short story::

    class Loudness(Node):
        '''Why this node exists.'''

        @dataclass
        class Params:
            gain_db: float = 0.0

        inputs = {"audio": Input(AudioChunk, policy="queue", size=32)}
        outputs = {"level": Output(Embedding)}

        def on_message(self, port, msg):
            self.send("level", Embedding(vector=..., capture_ns=msg.capture_ns))

Sources (no inputs) implement ``step()`` instead and return ``False`` when they run dry.
Everything else — sockets, policies, heartbeats, signals, end of stream — is the base's
job, so graph validation can read the ports and params without running anything.

A node that crashed is restarted by the supervisor, and the new process *continues* the old one:
its outputs go on numbering, ``restarted`` says so, a file source asks ``resume_at_ns()`` where to
go on, and a node keeps the few numbers it needs across the restart in ``carried`` (declared in
``carries``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from pipeline.messages import Message
from pipeline.stats import Rolling


@dataclass(frozen=True)
class Input:
    """An input port: the message type it accepts and its default queue policy.

    ``latest`` is for video: a slow consumer should see the newest frame, not a backlog.
    ``queue`` (bounded, drop-oldest) is for audio and features, where every chunk counts
    but memory must not grow without bound. ``max_bytes`` bounds the queue in bytes as ``size``
    does in messages (0: the message type's default, ``pipeline.transport.DEFAULT_MAX_BYTES``).
    The graph YAML may override all three.
    """

    type: type[Message]
    policy: str = "queue"
    size: int = 16
    doc: str = ""
    max_bytes: int = 0
    #: lossless mode only: hold a message here until each of these inputs has delivered one at
    #: least as new (or ended), so a node pairs the same moments of its streams however far
    #: one path lags the other (the separator's audio waits for the faces of its time)
    waits_for: tuple[str, ...] = ()


@dataclass(frozen=True)
class Output:
    """An output port: the message type it sends. ``max_bytes``: what its send pipe to each reader may
    hold (0: the message type's default); the graph YAML may override it."""

    type: type[Message]
    doc: str = ""
    max_bytes: int = 0


@dataclass
class NoParams:
    pass


class BadInput(ValueError):
    """Raised by a node for a message it cannot use (wrong shape, wrong rate...).

    The loop counts it, logs it and carries on: one bad message must not stop a live graph.
    So it does for any other Exception out of ``on_message`` (``pipeline.runner.deliver``), but
    that one is taken for a bug and its traceback logged; raising BadInput says "expected, the
    input's fault". Before ``on_message`` the runtime has already refused what the schema or the
    port forbids (another message type, another sender, NaN), so a node checks only what is
    specific to it: sizes its model takes, jumps its buffers would have to fill.
    """


class Node:
    """Base class. Subclasses declare ``Params``, ``inputs``, ``outputs`` and override hooks."""

    Params: ClassVar[type] = NoParams
    inputs: ClassVar[dict[str, Input]] = {}
    outputs: ClassVar[dict[str, Output]] = {}
    #: subscribe to the supervisor's telemetry (other nodes' heartbeats), e.g. to draw them.
    wants_telemetry: ClassVar[bool] = False
    #: a source that releases media by its own timestamps (a file) sets this in open(), so in
    #: lossless mode the other sources keep pace with it; devices leave it False
    paced_by_media: bool = False
    #: int values kept across a restart in ``self.carried`` (0 at the run's first start): what a
    #: restarted process needs of its predecessor's, e.g. a count that must not start over
    carries: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, params: Any, runtime: Any = None) -> None:
        self.name = name
        self.params = params
        self.log = logging.getLogger(f"earshot.{name}")
        self._runtime = runtime  # pipeline.runner.Runtime (or a test harness)
        self.stats: dict[str, Rolling] = {"compute_ms": Rolling()}
        self.counters: dict[str, int] = {"errors": 0}
        #: latest heartbeat stats of every node, if wants_telemetry
        self.telemetry: dict[str, dict] = {}
        self.slept_s = 0.0  # time spent in sleep_until, subtracted from compute time
        # the runtime keeps them in the run directory (pipeline.runner.Carry); a test harness in a dict
        carry = getattr(runtime, "carry", None)
        self.carried = carry if carry is not None else dict.fromkeys(self.carries, 0)

    # -- hooks ---------------------------------------------------------------------------

    def open(self) -> None:
        """Acquire devices, load models. Runs before the graph starts."""

    def step(self) -> bool:
        """Sources only: produce some output; return False when there is nothing more."""
        raise NotImplementedError(f"{type(self).__name__} has no inputs, so it must implement step()")

    def on_message(self, port: str, msg: Message) -> None:
        """Handle one message delivered on ``port``."""

    def tick(self) -> None:
        """Called every time round the loop (≈ every ``tick_s``), for timed work."""

    def on_audio_gap(self, port: str, gap: Any) -> None:
        """Input ``port`` carries audio and did not deliver some of it: ``gap`` (a
        ``pipeline.transport.AudioGap``) says where in its stream and how long. The runtime has
        counted and logs it; a node that writes audio out marks it (the renderer, in its MP4)."""

    def on_end(self) -> None:
        """All inputs reached end of stream: flush what is buffered before ``close``."""

    def close(self) -> None:
        """Release devices and files. Always called, also after an error."""

    def summary(self) -> str:
        """One line for the run's closing report: what this node produced, of what it was given.
        A user must be able to tell a complete output from one that silently lost half its input."""
        return ""

    # -- services ------------------------------------------------------------------------

    def send(self, port: str, msg: Message) -> None:
        if port not in self.outputs:
            raise KeyError(f"{self.name}: no output port {port!r} (has {sorted(self.outputs)})")
        expected = self.outputs[port].type
        if not isinstance(msg, expected):
            raise TypeError(f"{self.name}.{port}: sends {expected.__name__}, got {type(msg).__name__}")
        self._runtime.send(port, msg)

    def is_wired(self, port: str) -> bool:
        """Whether the graph connects this input (optional inputs may be left unwired)."""
        return self._runtime.is_wired(port)

    @property
    def stopping(self) -> bool:
        return self._runtime.stopping

    @property
    def epoch_ns(self) -> int:
        """The graph's shared start time: file sources pace media time from it, so video
        and audio read by different processes come out aligned."""
        return self._runtime.epoch_ns

    @property
    def restarted(self) -> bool:
        """This process replaces one of this node that crashed, hung or was killed earlier in the run."""
        return bool(getattr(self._runtime, "restarted", False))

    def resume_at_ns(self) -> int | None:
        """A file source whose process was restarted: the first media time (ns since the epoch) still
        to send — the graph's clock now (realtime), or just after what it released before (lossless).
        None on a first start. Ask in ``step()``: the epoch is known only once the graph started."""
        resume = getattr(self._runtime, "resume_at_ns", None)
        return resume() if resume else None

    def sleep_until(self, deadline_ns: int) -> bool:
        """Sleep until a monotonic time, waking early on shutdown. False if stopping."""
        t0 = time.perf_counter()
        try:
            while not self.stopping:
                left = deadline_ns - time.monotonic_ns()
                if left <= 0:
                    return True
                time.sleep(min(left / 1e9, 0.05))
            return False
        finally:  # pacing is not work: keep it out of the node's compute time
            self.slept_s += time.perf_counter() - t0

    def pace(self, media_ns: int) -> bool:
        """A file source: release what was recorded at ``media_ns`` after the epoch when it is
        due (the runtime decides: the wall clock, or in lossless mode the slowest source)."""
        runtime_pace = getattr(self._runtime, "pace", None)
        return runtime_pace(media_ns) if runtime_pace else self.sleep_until(self.epoch_ns + media_ns)

    def count(self, counter: str, n: int = 1) -> None:
        self.counters[counter] = self.counters.get(counter, 0) + n

    def observe(self, stat: str, value: float) -> None:
        self.stats.setdefault(stat, Rolling()).add(value)

    @classmethod
    def make_params(cls, values: dict[str, Any] | None) -> Any:
        """Build and type-check Params from YAML values; raises ValueError naming the field."""
        return build_params(cls.Params, values or {})


_SIMPLE = {int: (int,), float: (int, float), str: (str,), bool: (bool,), list: (list,), dict: (dict,)}


def build_params(params_cls: type, values: dict[str, Any]) -> Any:
    import typing

    if not dataclasses.is_dataclass(params_cls):
        raise TypeError(f"{params_cls!r} is not a dataclass")
    if not isinstance(values, dict):
        raise ValueError(f"params must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(params_cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown param(s) {unknown}; known: {sorted(fields)}")
    hints = typing.get_type_hints(params_cls)
    # YAML reads `--set camera.source=0` as the number 0; a str param means its text
    values = {name: str(value) if hints[name] is str and isinstance(value, (int, float)) and not isinstance(value, bool)
              else value for name, value in values.items()}
    for name, value in values.items():
        _check_type(name, hints[name], value)
    try:
        params = params_cls(**values)
    except TypeError as exc:  # a required field is missing
        raise ValueError(str(exc)) from None
    validate = getattr(params, "validate", None)
    if callable(validate):
        validate()  # raises ValueError with its own message
    return params


def _check_type(name: str, hint: Any, value: Any) -> None:
    import types
    import typing

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        errors = []
        for option in options:
            try:
                _check_type(name, option, value)
                return
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(f"param {name!r}: {value!r} matches none of {options}")
    if hint is type(None):
        if value is not None:
            raise ValueError(f"param {name!r}: expected null, got {value!r}")
        return
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise ValueError(f"param {name!r}: {value!r} is not one of {list(typing.get_args(hint))}")
        return
    base = origin or hint
    allowed = _SIMPLE.get(base)
    if allowed is None:
        return  # a type we do not check structurally
    if not isinstance(value, allowed) or (base is not bool and isinstance(value, bool)):
        raise ValueError(f"param {name!r}: expected {base.__name__}, got {type(value).__name__} {value!r}")
