"""Typed messages and their wire format.

A message travels as a ZeroMQ multipart: ``[topic, header, *buffers]``.

* ``topic`` is the message type name (so a SUB socket could filter on it).
* ``header`` is UTF-8 JSON: schema version, type, sequence number, source node, the
  capture timestamp (``time.monotonic_ns()`` where the data was *born*: at the camera, at
  the ADC), the scalar fields, and one ``{"name", "dtype", "shape"}`` entry per buffer.
* each buffer is the raw C-contiguous bytes of one numpy array field.

Why not pickle: a socket is an untrusted input, and unpickling runs code. Here the only
things ever constructed from bytes are JSON scalars and numpy arrays of whitelisted
dtypes, and every field is checked against the message's dataclass schema. Anything off
raises :class:`MessageError`, one error type the node base counts and logs.

A message type is defined once, as a dataclass below; its annotations are the single
source for encoding, validation and documentation (``python launch.py --list-messages``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

SCHEMA_VERSION = 1

#: dtypes that may cross the wire. Object/void dtypes could smuggle arbitrary bytes.
WIRE_DTYPES = frozenset(
    ["bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
     "float16", "float32", "float64", "complex64", "complex128"]
)

_ITEMSIZE = {name: np.dtype(name).itemsize for name in WIRE_DTYPES}

MAX_HEADER_BYTES = 64 * 1024
MAX_BUFFERS = 16


class MessageError(ValueError):
    """A frame that is not a valid Earshot message: says what is wrong and where."""


@dataclass(frozen=True)
class ArraySpec:
    """What an array field must look like: allowed dtypes and number of dimensions."""

    dtypes: tuple[str, ...]
    ndims: tuple[int, ...]

    def check(self, type_name: str, name: str, value: np.ndarray) -> None:
        self.check_layout(type_name, name, value.dtype.name, tuple(value.shape))

    def check_layout(self, type_name: str, name: str, dtype: str, shape: tuple[int, ...]) -> None:
        """The same check from a dtype name and shape, before any array exists (decoding)."""
        if dtype not in self.dtypes:
            raise MessageError(f"{type_name}.{name}: dtype {dtype}, expected one of {list(self.dtypes)}")
        if len(shape) not in self.ndims:
            raise MessageError(f"{type_name}.{name}: shape {shape} has {len(shape)} dims, expected {self.ndims}")


def array(*dtypes: str, ndim: int | tuple[int, ...]) -> Any:
    """Declare an ndarray field of a message with its allowed dtypes and rank."""
    return field(metadata={"array": ArraySpec(tuple(dtypes), ndim if isinstance(ndim, tuple) else (ndim,))})


_REGISTRY: dict[str, type[Message]] = {}


@dataclass(kw_only=True)
class Message:
    """Common envelope of every message.

    ``capture_ns`` is stamped once where the data was born and copied along by every
    node that derives from it, so any node can tell the age of what it holds.
    """

    capture_ns: int = 0
    seq: int = 0
    source: str = ""

    type_name: ClassVar[str] = "Message"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.type_name = cls.__name__
        _REGISTRY[cls.__name__] = cls

    # -- schema -------------------------------------------------------------------------

    @classmethod
    def array_fields(cls) -> dict[str, ArraySpec]:
        return _array_fields(cls)

    @classmethod
    def scalar_fields(cls) -> dict[str, Any]:
        return _scalar_fields(cls)

    def validate(self) -> None:
        """Check array dtypes/ranks; called on both encode and decode."""
        for name, spec in self.array_fields().items():
            value = getattr(self, name)
            if not isinstance(value, np.ndarray):
                raise MessageError(f"{self.type_name}.{name}: expected numpy array, got {type(value).__name__}")
            spec.check(self.type_name, name, value)
        self.check()

    def check(self) -> None:
        """Cross-field invariants a message type adds (shapes that must agree)."""


# The schema of a class never changes: resolve it once (get_type_hints costs ~60 µs).
@functools.cache
def _array_fields(cls: type[Message]) -> dict[str, ArraySpec]:
    return {f.name: f.metadata["array"] for f in dataclasses.fields(cls) if "array" in f.metadata}


@functools.cache
def _scalar_fields(cls: type[Message]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)
            if "array" not in f.metadata and f.name not in ("capture_ns", "seq", "source")}


def message_types() -> dict[str, type[Message]]:
    return dict(_REGISTRY)


def describe_messages() -> list[str]:
    """Every message type with its fields, from the same schema that encodes and validates them."""
    lines = []
    for name, cls in sorted(_REGISTRY.items()):
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        lines.append(f"{name}: {doc}")
        for f, spec in cls.array_fields().items():
            lines.append(f"    {f:<14} ndarray {'|'.join(spec.dtypes)}, ndim {'/'.join(map(str, spec.ndims))}")
        for f, hint in cls.scalar_fields().items():
            lines.append(f"    {f:<14} {getattr(hint, '__name__', str(hint))}")
    return lines


# ---------------------------------------------------------------------------------------
# The message types. Units are in the names where they matter.
# ---------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class VideoFrame(Message):
    """One camera frame, BGR uint8 (OpenCV's order, so drawing needs no conversion)."""

    image: np.ndarray = array("uint8", ndim=3)
    frame_index: int = 0
    pts_s: float = 0.0  # presentation time in the source's own clock (file time for files)

    def check(self) -> None:
        if self.image.shape[2] != 3:
            raise MessageError(f"VideoFrame.image: shape {self.image.shape}, expected H×W×3")


@dataclass(kw_only=True)
class AudioChunk(Message):
    """A block of mono (n,) or multichannel (n, ch) float32 samples in [-1, 1].

    ``first_sample`` counts samples since the stream started, so gaps and overlaps are
    detectable and the capture time of any sample is derivable.
    """

    samples: np.ndarray = array("float32", ndim=(1, 2))
    sample_rate_hz: int = 16000
    first_sample: int = 0


@dataclass(kw_only=True)
class Spectrogram(Message):
    """STFT frames (T, F): complex64 for the separator, float32 log-mel for encoders."""

    frames: np.ndarray = array("complex64", "float32", ndim=2)
    kind: str = "complex"  # "complex" | "logmel" | "magnitude"
    sample_rate_hz: int = 16000
    n_fft: int = 512
    hop_length: int = 160
    win_length: int = 400
    first_frame: int = 0


@dataclass(kw_only=True)
class FeatureMap(Message):
    """Visual encoder output (C, H, W) for one video frame (``frame_index``)."""

    features: np.ndarray = array("float32", "float16", ndim=3)
    frame_index: int = 0


@dataclass(kw_only=True)
class Embedding(Message):
    """Audio encoder output: one vector summarising the audio window ending at capture_ns."""

    vector: np.ndarray = array("float32", "float16", ndim=1)
    window_s: float = 1.0


@dataclass(kw_only=True)
class Heatmap(Message):
    """Where the sound comes from: (H, W) in [0, 1] over the frame ``frame_index``."""

    heatmap: np.ndarray = array("float32", ndim=2)
    frame_index: int = 0


@dataclass(kw_only=True)
class FaceTracks(Message):
    """Faces in one frame: boxes (N, 4) xyxy pixels, stable track ids, lip features (N, D)."""

    boxes: np.ndarray = array("float32", ndim=2)
    track_ids: np.ndarray = array("int64", ndim=1)
    lip_features: np.ndarray = array("float32", ndim=2)
    frame_index: int = 0
    frame_width: int = 0
    frame_height: int = 0

    def check(self) -> None:
        n = self.boxes.shape[0]
        if self.boxes.shape[1] != 4 or self.track_ids.shape[0] != n or self.lip_features.shape[0] != n:
            raise MessageError(
                f"FaceTracks: boxes {self.boxes.shape}, track_ids {self.track_ids.shape}, "
                f"lip_features {self.lip_features.shape} must agree on N (boxes N×4)")


@dataclass(kw_only=True)
class SeparatedAudio(Message):
    """One isolated voice per tracked face: samples (N, n) float32, aligned with track_ids.

    As for :class:`AudioChunk`, ``capture_ns`` is the capture time of ``first_sample``, so a
    consumer can place voices and the mixture on one timeline."""

    samples: np.ndarray = array("float32", ndim=2)
    track_ids: np.ndarray = array("int64", ndim=1)
    sample_rate_hz: int = 16000
    first_sample: int = 0

    def check(self) -> None:
        if self.samples.shape[0] != self.track_ids.shape[0]:
            raise MessageError(
                f"SeparatedAudio: {self.samples.shape[0]} voices but {self.track_ids.shape[0]} track ids")


@dataclass(kw_only=True)
class Heartbeat(Message):
    """A node's periodic liveness + stats, sent to the supervisor's telemetry socket."""

    node: str = ""
    pid: int = 0
    state: str = "running"
    stats: dict = field(default_factory=dict)


@dataclass(kw_only=True)
class Control(Message):
    """Supervisor → nodes. ``start`` carries the graph's shared epoch (monotonic ns)."""

    command: str = "start"
    epoch_ns: int = 0


@dataclass(kw_only=True)
class EndOfStream(Message):
    """A source has no more data. Downstream nodes finish once all their inputs ended."""

    reason: str = "end of input"


# ---------------------------------------------------------------------------------------
# Wire encoding
# ---------------------------------------------------------------------------------------

_SCALAR_CHECKS: dict[Any, tuple[type, ...]] = {
    int: (int,), float: (int, float), str: (str,), bool: (bool,), dict: (dict,), list: (list,),
}


def encode(msg: Message) -> list[Any]:
    """Message → multipart frames. Arrays go as themselves (buffer protocol, no copy here)."""
    msg.validate()
    buffers: list[np.ndarray] = []
    specs = []
    for name in msg.array_fields():
        a = getattr(msg, name)
        if not a.flags.c_contiguous:
            a = np.ascontiguousarray(a)
        specs.append({"name": name, "dtype": a.dtype.name, "shape": list(a.shape)})
        buffers.append(a)
    header = {
        "v": SCHEMA_VERSION,
        "type": msg.type_name,
        "seq": msg.seq,
        "source": msg.source,
        "capture_ns": msg.capture_ns,
        "fields": {name: getattr(msg, name) for name in msg.scalar_fields()},
        "buffers": specs,
    }
    return [msg.type_name.encode(), json.dumps(header, separators=(",", ":")).encode(), *buffers]


def decode(frames: list[bytes] | list[Any]) -> Message:
    """Multipart frames → validated Message. Every failure is a MessageError saying why."""
    if len(frames) < 2:
        raise MessageError(f"expected [topic, header, *buffers], got {len(frames)} frame(s)")
    raw_header = _as_bytes(frames[1])
    if len(raw_header) > MAX_HEADER_BYTES:
        raise MessageError(f"header is {len(raw_header)} bytes, limit {MAX_HEADER_BYTES}")
    try:
        header = json.loads(raw_header)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MessageError(f"header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise MessageError("header is not a JSON object")
    if header.get("v") != SCHEMA_VERSION:
        raise MessageError(f"schema version {header.get('v')!r}, this build speaks {SCHEMA_VERSION}")
    type_name = header.get("type")
    cls = _REGISTRY.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise MessageError(f"unknown message type {type_name!r}")
    topic = _as_bytes(frames[0])
    if topic != type_name.encode():
        raise MessageError(f"topic {topic[:40]!r} does not match header type {type_name!r}")

    envelope = {}
    for key, kind in (("seq", int), ("capture_ns", int), ("source", str)):
        value = header.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise MessageError(f"{type_name}: header field {key!r} must be {kind.__name__}, got {value!r}")
        envelope[key] = value

    fields = header.get("fields")
    if not isinstance(fields, dict):
        raise MessageError(f"{type_name}: header 'fields' must be an object")
    kwargs: dict[str, Any] = {}
    for name, hint in cls.scalar_fields().items():
        if name not in fields:
            raise MessageError(f"{type_name}: missing field {name!r}")
        value = fields[name]
        allowed = _SCALAR_CHECKS.get(hint, (object,))
        if not isinstance(value, allowed) or (hint is not bool and isinstance(value, bool)):
            raise MessageError(f"{type_name}.{name}: expected {getattr(hint, '__name__', hint)}, got {value!r}")
        kwargs[name] = float(value) if hint is float else value
    extra = set(fields) - set(kwargs)
    if extra:
        raise MessageError(f"{type_name}: unexpected fields {sorted(extra)}")

    specs = header.get("buffers")
    arrays = cls.array_fields()
    if not isinstance(specs, list) or len(specs) != len(arrays) or len(specs) > MAX_BUFFERS:
        raise MessageError(f"{type_name}: expected {len(arrays)} buffer descriptions, got {specs!r:.80}")
    if len(frames) != 2 + len(specs):
        raise MessageError(f"{type_name}: header announces {len(specs)} buffers, message has {len(frames) - 2}")
    for spec, frame in zip(specs, frames[2:]):
        kwargs_name, arr = _decode_buffer(type_name, spec, frame, arrays)
        kwargs[kwargs_name] = arr
    if len(kwargs) != len(arrays) + len(cls.scalar_fields()):
        raise MessageError(f"{type_name}: buffers {[s.get('name') for s in specs]} do not match {list(arrays)}")
    msg = cls(**envelope, **kwargs)
    msg.check()  # dtypes and ranks were checked buffer by buffer above
    return msg


def _decode_buffer(type_name: str, spec: Any, frame: Any, arrays: dict[str, ArraySpec]) -> tuple[str, np.ndarray]:
    if not isinstance(spec, dict):
        raise MessageError(f"{type_name}: buffer description {spec!r:.60} is not an object")
    name, dtype, shape = spec.get("name"), spec.get("dtype"), spec.get("shape")
    if name not in arrays:
        raise MessageError(f"{type_name}: unknown buffer {name!r}")
    if dtype not in WIRE_DTYPES:
        raise MessageError(f"{type_name}.{name}: dtype {dtype!r} is not allowed on the wire")
    if (not isinstance(shape, list) or len(shape) > 8
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise MessageError(f"{type_name}.{name}: bad shape {shape!r}")
    arrays[name].check_layout(type_name, name, dtype, tuple(shape))
    buf = frame.buffer if hasattr(frame, "buffer") else memoryview(frame)
    nbytes = math.prod(shape) * _ITEMSIZE[dtype]
    if buf.nbytes != nbytes:
        raise MessageError(f"{type_name}.{name}: {buf.nbytes} bytes on the wire, {dtype}{tuple(shape)} needs {nbytes}")
    arr = np.frombuffer(buf, dtype=dtype).reshape(shape) if nbytes else np.zeros(shape, dtype)
    return name, arr


def _as_bytes(frame: Any) -> bytes:
    if hasattr(frame, "bytes"):  # zmq.Frame
        return frame.bytes
    return bytes(frame)
