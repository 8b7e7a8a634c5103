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
raises :class:`MessageError`, the one error type decoding raises (whatever the bytes).

A message type is defined once, as a dataclass below; its annotations are the single
source for encoding, validation and documentation (``python launch.py --list-messages``).

Limits. A header is trusted for nothing, so decoding never lets one decide how much is
allocated or how deep anything recurses:

* the header is at most 64 kB of UTF-8 JSON, nested at most ``MAX_JSON_DEPTH`` deep, with
  integers of at most 19 digits (checked while parsing, before Python's ``int()`` ever sees a
  4,300-digit number) and no ``NaN``/``Infinity`` constants;
* every scalar field has a range (``scalar(lo=, hi=)``; by default an int fits int64, a float
  is finite, a string is at most ``MAX_STR_CHARS``), and a field with a fixed vocabulary a set
  of choices; fields that drive allocation downstream (sample rates, FFT sizes, frame sizes,
  sample and frame counters) have tight ranges;
* each message type has a ceiling on its total buffer bytes (``max_bytes``: 64 MB for a
  VideoFrame, less for the rest), checked on the shape the header declares before any array is
  made: a zero dimension counts as 1, so ``(0, 2**40)`` is refused rather than reshaped; the
  buffer's byte length must equal the declared shape exactly;
* a VideoFrame is ``MIN_FRAME_SIDE`` to ``MAX_FRAME_SIDE`` pixels on each side.

Non-finite values. Policy: **reject**. A message whose float or complex arrays hold a NaN or an
infinity is refused on decode (``MessageError``, reason ``non-finite``) and counted as ``bad`` by
the receiving input, like any other malformed frame. Repairing (``nan_to_num``) was not chosen:
it would hide a broken producer behind plausible-looking zeros, while a refused audio chunk
shows up where it matters (the stft node fills the gap with counted silence, the writers with
silence), and one rule then covers audio, spectra, features, maps and face tracks alike. The
check is one BLAS dot product per array (the sum of squares is finite unless an element is
not), about a microsecond for an audio chunk.

Magnitudes. Float arrays are also held to a magnitude (``array(max_abs=)``: 1e9 by default,
``MAX_AUDIO_ABS`` = 1e3 for audio, nominally in [-1, 1]); a value beyond it is refused with reason
``out of range``, since its spectra or activations would overflow float32 into the very
infinities refused above.

Every refusal raises :class:`MessageError` with a human reason and a short ``kind``
(``header``, ``limits``, ``fields``, ``buffers``, ``non-finite``, ``out of range``, ``schema``)
that inputs count by.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgspec
import numpy as np

SCHEMA_VERSION = 1

#: dtypes that may cross the wire. Object/void dtypes could smuggle arbitrary bytes.
WIRE_DTYPES = frozenset(
    ["bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
     "float16", "float32", "float64", "complex64", "complex128"]
)

_ITEMSIZE = {name: np.dtype(name).itemsize for name in WIRE_DTYPES}
#: the dtype objects by wire name: numpy parses a dtype given as a string on every array it makes
_DTYPE = {name: np.dtype(name) for name in WIRE_DTYPES}

MAX_HEADER_BYTES = 64 * 1024
MAX_BUFFERS = 16
#: deepest JSON nesting a header may have (a heartbeat's stats need about 7)
MAX_JSON_DEPTH = 32
#: longest integer literal in a header: int64 needs 19 digits
MAX_INT_DIGITS = 19
MAX_STR_CHARS = 1024
#: the smallest frame any node can work with (a 0×0 or 1×1 frame is refused on the wire), and the largest side
MIN_FRAME_SIDE, MAX_FRAME_SIDE = 2, 16384

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: counters of samples and frames: 2**48 samples is 560 years at 16 kHz, and stays exact in a float64
COUNTER_MAX = 2**48
MAX_SAMPLE_RATE_HZ = 384_000
#: audio is nominally in [-1, 1]; beyond this it is not audio (and its spectra would overflow float32)
MAX_AUDIO_ABS = 1e3


class MessageError(ValueError):
    """A frame that is not a valid Earshot message: says what is wrong and where.

    ``kind`` is a short, fixed category (``header``, ``limits``, ``fields``, ``buffers``,
    ``non-finite``, ``out of range``, ``schema``) that receivers count refusals by; the text says
    the rest.
    """

    def __init__(self, message: str, kind: str = "schema") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class ArraySpec:
    """What an array field must look like: allowed dtypes, number of dimensions, and for float
    arrays the largest magnitude an element may have (all must be finite)."""

    dtypes: tuple[str, ...]
    ndims: tuple[int, ...]
    max_abs: float = 1e9

    def check(self, type_name: str, name: str, value: np.ndarray) -> None:
        self.check_layout(type_name, name, value.dtype.name, tuple(value.shape))

    def check_layout(self, type_name: str, name: str, dtype: str, shape: tuple[int, ...]) -> None:
        """The same check from a dtype name and shape, before any array exists (decoding)."""
        if dtype not in self.dtypes:
            raise MessageError(f"{type_name}.{name}: dtype {dtype}, expected one of {list(self.dtypes)}", "buffers")
        if len(shape) not in self.ndims:
            raise MessageError(f"{type_name}.{name}: shape {shape} has {len(shape)} dims, expected {self.ndims}",
                               "buffers")


def array(*dtypes: str, ndim: int | tuple[int, ...], max_abs: float = 1e9) -> Any:
    """Declare an ndarray field of a message with its allowed dtypes, rank and (floats) magnitude."""
    return field(metadata={"array": ArraySpec(tuple(dtypes), ndim if isinstance(ndim, tuple) else (ndim,), max_abs)})


@dataclass(frozen=True)
class Bounds:
    """What a scalar field may hold: a closed range for numbers, a length or a vocabulary for text."""

    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()

    def check(self, type_name: str, name: str, value: Any) -> None:
        if isinstance(value, str):
            if self.choices and value not in self.choices:
                raise MessageError(f"{type_name}.{name}: {value[:40]!r} is not one of {list(self.choices)}", "fields")
            if len(value) > MAX_STR_CHARS:
                raise MessageError(f"{type_name}.{name}: {len(value)} characters, limit {MAX_STR_CHARS}", "fields")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                raise MessageError(f"{type_name}.{name}: {value} is not finite", "fields")
            if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
                raise MessageError(f"{type_name}.{name}: {value!r:.40} outside [{self.lo}, {self.hi}]", "fields")


_DEFAULT_BOUNDS = {int: Bounds(INT64_MIN, INT64_MAX), float: Bounds(-1e18, 1e18)}


def scalar(default: Any, *, lo: float | None = None, hi: float | None = None, choices: tuple[str, ...] = ()) -> Any:
    """Declare a scalar field with the range (or vocabulary) decoding holds it to."""
    return field(default=default, metadata={"bounds": Bounds(lo, hi, choices)})


def frame_counter() -> Any:
    return scalar(0, lo=0, hi=COUNTER_MAX)


def sample_rate() -> Any:
    return scalar(16000, lo=1, hi=MAX_SAMPLE_RATE_HZ)


_REGISTRY: dict[str, type[Message]] = {}
#: the same by topic (the first frame of a message), for the hot path
_REGISTRY_BY_TOPIC: dict[bytes, type[Message]] = {}


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
    #: the most buffer bytes one message of this type may declare (all its arrays together)
    max_bytes: ClassVar[int] = 1 << 20

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.type_name = cls.__name__
        _REGISTRY[cls.__name__] = cls
        _REGISTRY_BY_TOPIC[cls.__name__.encode()] = cls

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


@functools.cache
def _scalar_rules(cls: type[Message]) -> tuple[tuple[str, tuple[type, ...], bool, Bounds | None], ...]:
    """Per scalar field: (name, JSON types allowed, is float, bounds): what decoding checks."""
    meta = {f.name: f.metadata for f in dataclasses.fields(cls)}
    rules = []
    for name, hint in _scalar_fields(cls).items():
        bounds = meta[name].get("bounds") or _DEFAULT_BOUNDS.get(hint)
        if hint is str and bounds is None:
            bounds = Bounds()
        rules.append((name, _SCALAR_CHECKS.get(hint, (object,)), hint is float, bounds))
    return tuple(rules)


def message_types() -> dict[str, type[Message]]:
    return dict(_REGISTRY)


def describe_messages() -> list[str]:
    """Every message type with its fields, from the same schema that encodes and validates them."""
    lines = []
    for name, cls in sorted(_REGISTRY.items()):
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        lines.append(f"{name}: {doc}")
        for f, spec in cls.array_fields().items():
            floats = any(d.startswith(("float", "complex")) for d in spec.dtypes)
            lines.append(f"    {f:<14} ndarray {'|'.join(spec.dtypes)}, ndim {'/'.join(map(str, spec.ndims))}"
                         + (f", finite, |x| ≤ {spec.max_abs:g}" if floats else ""))
        meta = {f.name: f.metadata for f in dataclasses.fields(cls)}
        for f, hint in cls.scalar_fields().items():
            b = meta[f].get("bounds")
            limits = "" if b is None else f" one of {list(b.choices)}" if b.choices else f" in [{b.lo}, {b.hi}]"
            lines.append(f"    {f:<14} {getattr(hint, '__name__', str(hint))}{limits}")
        lines.append(f"    (buffers at most {cls.max_bytes / 2**20:g} MiB)" if cls.array_fields() else "")
    return [line for line in lines if line]


# ---------------------------------------------------------------------------------------
# The message types. Units are in the names where they matter.
# ---------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class VideoFrame(Message):
    """One camera frame, BGR uint8 (OpenCV's order, so drawing needs no conversion)."""

    image: np.ndarray = array("uint8", ndim=3)
    frame_index: int = frame_counter()
    pts_s: float = scalar(0.0, lo=-1e9, hi=1e9)  # presentation time in the source's own clock (file time for files)

    max_bytes: ClassVar[int] = 64 << 20  # 4096×4096 BGR is 48 MiB; 8K is refused

    def check(self) -> None:
        h, w, c = self.image.shape
        if c != 3 or not (MIN_FRAME_SIDE <= h <= MAX_FRAME_SIDE and MIN_FRAME_SIDE <= w <= MAX_FRAME_SIDE):
            raise MessageError(f"VideoFrame.image: shape {self.image.shape}, expected H×W×3 with H, W in "
                               f"[{MIN_FRAME_SIDE}, {MAX_FRAME_SIDE}]")


@dataclass(kw_only=True)
class AudioChunk(Message):
    """A block of mono (n,) or multichannel (n, ch) float32 samples in [-1, 1].

    ``first_sample`` counts samples since the stream started, so gaps and overlaps are
    detectable and the capture time of any sample is derivable.
    """

    samples: np.ndarray = array("float32", ndim=(1, 2), max_abs=MAX_AUDIO_ABS)
    sample_rate_hz: int = sample_rate()
    first_sample: int = scalar(0, lo=-COUNTER_MAX, hi=COUNTER_MAX)

    max_bytes: ClassVar[int] = 8 << 20  # 10 s of 48 kHz stereo is 3.7 MiB


@dataclass(kw_only=True)
class Spectrogram(Message):
    """STFT frames (T, F): complex64 for the separator, float32 log-mel for encoders."""

    frames: np.ndarray = array("complex64", "float32", ndim=2)
    kind: str = scalar("complex", choices=("complex", "logmel", "magnitude"))
    sample_rate_hz: int = sample_rate()
    n_fft: int = scalar(512, lo=1, hi=65536)
    hop_length: int = scalar(160, lo=1, hi=65536)
    win_length: int = scalar(400, lo=1, hi=65536)
    first_frame: int = scalar(0, lo=0, hi=2**32)  # × a hop of up to 65536 stays within a sample counter

    max_bytes: ClassVar[int] = 32 << 20

    def check(self) -> None:
        if (self.kind == "complex") != (self.frames.dtype == np.complex64):
            raise MessageError(f"Spectrogram: {self.kind} frames as {self.frames.dtype}: complex frames are "
                               f"complex64, the others float32")


@dataclass(kw_only=True)
class FeatureMap(Message):
    """Visual encoder output (C, H, W) for one video frame (``frame_index``)."""

    features: np.ndarray = array("float32", "float16", ndim=3)
    frame_index: int = frame_counter()

    max_bytes: ClassVar[int] = 16 << 20


@dataclass(kw_only=True)
class Embedding(Message):
    """Audio encoder output: one vector summarising the audio window ending at capture_ns."""

    vector: np.ndarray = array("float32", "float16", ndim=1)
    window_s: float = scalar(1.0, lo=0.0, hi=3600.0)


@dataclass(kw_only=True)
class Heatmap(Message):
    """Where the sound comes from: (H, W) in [0, 1] over the frame ``frame_index``."""

    heatmap: np.ndarray = array("float32", ndim=2)
    frame_index: int = frame_counter()
    #: the face track the sound comes from when the sound is speech and one face's lips move with it
    #: (`engines.localization.speaking_face`); -1: no face is speaking, or no faces are wired
    speaking_track_id: int = scalar(-1, lo=-1, hi=COUNTER_MAX)
    #: that face's lip-sync score (mean cosine of lips and voice over the last second), 0 when none
    speaking_score: float = scalar(0.0, lo=-1.0, hi=1.0)

    max_bytes: ClassVar[int] = 16 << 20


@dataclass(kw_only=True)
class FaceTracks(Message):
    """Faces in one frame: boxes (N, 4) xyxy pixels, stable track ids, lip features (N, D)."""

    boxes: np.ndarray = array("float32", ndim=2)
    track_ids: np.ndarray = array("int64", ndim=1)
    lip_features: np.ndarray = array("float32", ndim=2)
    frame_index: int = frame_counter()
    frame_width: int = scalar(0, lo=0, hi=65536)
    frame_height: int = scalar(0, lo=0, hi=65536)

    def check(self) -> None:
        n = self.boxes.shape[0]
        if self.boxes.shape[1] != 4 or self.track_ids.shape[0] != n or self.lip_features.shape[0] != n:
            raise MessageError(
                f"FaceTracks: boxes {self.boxes.shape}, track_ids {self.track_ids.shape}, "
                f"lip_features {self.lip_features.shape} must agree on N (boxes N×4)")


@dataclass(kw_only=True)
class ActiveSpeaker(Message):
    """Which face on screen is speaking, by lip sync, decided once per 40 ms of audio.

    One row per face on screen with a score (mean cosine of its lips and the voice over the last
    second, `engines.localization.speaking_face`): its track id, score and newest box (xyxy pixels of a
    ``frame_width`` × ``frame_height`` frame). ``capture_ns`` is the capture time of the moment decided
    on: the start of the newest 40 ms of audio scored, which is the time of the video frame its lips
    pair with."""

    track_ids: np.ndarray = array("int64", ndim=1)
    scores: np.ndarray = array("float32", ndim=1)
    boxes: np.ndarray = array("float32", ndim=2)
    #: the face speaking, -1 when none is clear (no face above the threshold, or no faces)
    speaking_track_id: int = scalar(-1, lo=-1, hi=COUNTER_MAX)
    #: that face's score, 0 when none
    speaking_score: float = scalar(0.0, lo=-1.0, hi=1.0)
    frame_width: int = scalar(0, lo=0, hi=65536)
    frame_height: int = scalar(0, lo=0, hi=65536)

    def check(self) -> None:
        n = self.track_ids.shape[0]
        if self.scores.shape != (n,) or self.boxes.shape != (n, 4):
            raise MessageError(f"ActiveSpeaker: track_ids {self.track_ids.shape}, scores {self.scores.shape}, "
                               f"boxes {self.boxes.shape} must agree on N (boxes N×4)")
        if self.speaking_track_id >= 0 and (self.speaking_track_id not in self.track_ids
                                            or not (self.frame_width and self.frame_height)):
            raise MessageError(f"ActiveSpeaker: speaking track {self.speaking_track_id} is not one of the {n} "
                               f"faces listed, or their frame's size ({self.frame_width}×{self.frame_height}) "
                               f"is unknown")


@dataclass(kw_only=True)
class SeparatedAudio(Message):
    """One isolated voice per tracked face: samples (N, n) float32, aligned with track_ids.

    As for :class:`AudioChunk`, ``capture_ns`` is the capture time of ``first_sample``, so a
    consumer can place voices and the mixture on one timeline."""

    samples: np.ndarray = array("float32", ndim=2, max_abs=MAX_AUDIO_ABS)
    track_ids: np.ndarray = array("int64", ndim=1)
    sample_rate_hz: int = sample_rate()
    first_sample: int = scalar(0, lo=-COUNTER_MAX, hi=COUNTER_MAX)

    max_bytes: ClassVar[int] = 16 << 20

    def check(self) -> None:
        if self.samples.shape[0] != self.track_ids.shape[0]:
            raise MessageError(
                f"SeparatedAudio: {self.samples.shape[0]} voices but {self.track_ids.shape[0]} track ids")


@dataclass(kw_only=True)
class Heartbeat(Message):
    """A node's periodic liveness + stats, sent to the supervisor's telemetry socket."""

    node: str = ""
    pid: int = scalar(0, lo=0, hi=2**31)
    state: str = "running"
    stats: dict = field(default_factory=dict)


@dataclass(kw_only=True)
class Control(Message):
    """Supervisor → nodes. ``start`` carries the graph's shared epoch (monotonic ns)."""

    command: str = "start"
    epoch_ns: int = scalar(0, lo=0, hi=INT64_MAX)


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


#: the quoted, escaped JSON string json.dumps writes (C); the encoder json.dumps would use
_JSON_STR = json.encoder.encode_basestring_ascii
_JSON_DUMPS = json.JSONEncoder(separators=(",", ":")).encode


def _json_scalar(value: Any) -> str:
    """One scalar as json.dumps writes it, without building an encoder per call (the hot path
    sends ints, finite floats and plain strings; anything else goes through json itself)."""
    kind = type(value)
    if kind is int:
        return int.__repr__(value)
    if kind is str:
        return _JSON_STR(value)
    if kind is float and value - value == 0.0:  # finite: what json.dumps writes via float.__repr__
        return float.__repr__(value)
    return _JSON_DUMPS(value)


@functools.cache
def _wire_plan(cls: type[Message]) -> tuple[bytes, str, tuple[tuple[str, str], ...], tuple[tuple[str, ArraySpec, str], ...]]:
    """What every header of ``cls`` shares, spelled once: its topic, the header's opening, each scalar
    field's key and each buffer description's opening (issue 17: the header costs a few string joins,
    not a json.dumps of a fresh dict). The bytes are exactly what json.dumps of the header dict writes."""
    head = f'{{"v":{SCHEMA_VERSION},"type":{_JSON_STR(cls.type_name)},"seq":'
    keys = tuple((name, ("{" if i == 0 else ",") + _JSON_STR(name) + ":") for i, name in enumerate(cls.scalar_fields()))
    arrays = tuple((name, spec, ("" if i == 0 else ",") + '{"name":' + _JSON_STR(name) + ',"dtype":"')
                   for i, (name, spec) in enumerate(cls.array_fields().items()))
    return cls.type_name.encode(), head, keys, arrays


def encode(msg: Message) -> list[Any]:
    """Message → multipart frames. Arrays go as themselves (buffer protocol, no copy here).

    Validates as :meth:`Message.validate` does (array types, dtypes and ranks, the type's cross-field
    check). The header is one bytes %-format of the type's template (`_header_template`; issue 17: the
    fewest steps per message, the caches being cold between frames); a value the template does not take as
    is goes to msgspec's Struct types, which write it or say what is wrong, and a type they cannot spell
    (Heartbeat) is written from its cached plan."""
    cls = type(msg)
    template = _TEMPLATES.get(cls)
    if template is None:
        template = _TEMPLATES[cls] = _header_template(cls)
    if template:
        frames = _encode_template(msg, template)
        if frames is not None:
            return frames
    return _encode_structs(msg)


def _encode_structs(msg: Message) -> list[Any]:
    """`encode` by msgspec's Struct types (or, for a type they cannot spell, the plan): what the template
    declines, written or refused with a reason."""
    cls = type(msg)
    types = _header_types(cls)
    if types is None:
        return _encode_plan(msg)
    header, body, description, names = types
    topic, _, _, arrays = _wire_plan(cls)
    buffers = _wire_arrays(msg, arrays)
    specs = [description(name, a.dtype.name, list(a.shape)) for (name, _, _), a in zip(arrays, buffers)]
    msg.check()
    fields = body(*[getattr(msg, name) for name in names])
    try:
        raw = _HEADER_ENCODER.encode(header(SCHEMA_VERSION, cls.type_name, msg.seq, msg.source, msg.capture_ns,
                                            fields, specs))
    except (TypeError, msgspec.EncodeError) as exc:  # e.g. a numpy scalar in a field: JSON has no such type
        raise MessageError(f"{msg.type_name}: header not encodable: {exc}") from None
    return [topic, raw, *buffers]


_HEADER_ENCODER = msgspec.json.Encoder()

#: per message type, its header template (`_header_template`), or False for a type that has none
_TEMPLATES: dict[type, Any] = {}
#: the wire names of the dtypes that may travel, keyed by the dtype itself: ``dtype.name`` calls into Python,
#: a dict lookup does not; a byte order other than the machine's is not a key (the Struct writer converts it)
_WIRE_NAME: dict[np.dtype, bytes] = {np.dtype(name): name.encode() for name in WIRE_DTYPES}
#: a shape as a header writes it, by rank
_SHAPE_FORMAT = tuple(b",".join([b"%d"] * n) for n in range(9))
#: strings as JSON text (quoted, escaped), for the few a node sends again and again (its name, a field's choices)
_JSON_TEXT: dict[str, bytes] = {}
_JSON_TEXT_MAX = 1024


def _json_text(value: Any) -> bytes | None:
    """``value`` as JSON text if it is a str a header may hold, else None."""
    if type(value) is not str:
        return None
    text = _JSON_TEXT.get(value)
    if text is None:
        if len(value) > MAX_STR_CHARS:
            return None
        if len(_JSON_TEXT) >= _JSON_TEXT_MAX:
            _JSON_TEXT.clear()
        text = _JSON_TEXT[value] = _JSON_STR(value).encode()
    return text


def _header_template(cls: type[Message]) -> tuple | bool:
    """``cls``'s header as one bytes %-template, with the kind of each value it takes: writing a header is
    then one C call. Why not msgspec here too: with the caches cold between messages (a frame every 33 ms),
    building its Structs and encoding cost several times the template (issue 17; the sending side's share of
    the hop: `benchmarks/transport.py --breakdown`). False for a type whose header msgspec's types cannot
    spell (Heartbeat's free-form stats)."""
    if _header_types(cls) is None:
        return False
    rules, arrays = _fast_rules(cls)
    head = b'{"v":%d,"type":%s,"seq":%%d,"source":%%s,"capture_ns":%%d,"fields":{' % (
        SCHEMA_VERSION, _JSON_STR(cls.type_name).encode())
    keys = b",".join(_JSON_STR(name).encode() + (b":%d" if kind is int else b":%r" if kind is float else b":%s")
                     for name, kind, *_ in rules)
    buffers = b",".join(b'{"name":' + _JSON_STR(name).encode() + b',"dtype":"%s","shape":[%s]}' for name in arrays)
    template = head + keys + b'},"buffers":[' + buffers + b"]}"
    fields = tuple((name, kind) for name, kind, *_ in rules)
    specs = tuple((name, frozenset(np.dtype(d) for d in spec.dtypes), spec.ndims) for name, spec in arrays.items())
    return cls.type_name.encode(), template, fields, specs


def _encode_template(msg: Message, plan: tuple) -> list[Any] | None:
    """`encode` by the type's template, or None when a value is not of the exact kind the template writes (a
    numpy scalar, a bool in an int field, a non-finite float, a wrong array): msgspec's path then writes it
    or says what is wrong, as before. The bytes differ from msgspec's only in spelling (a float's digits,
    non-ASCII escaped), never in what a decoder reads."""
    topic, template, fields, specs = plan
    seq, capture_ns, source = msg.seq, msg.capture_ns, _json_text(msg.source)
    if type(seq) is not int or type(capture_ns) is not int or source is None:
        return None
    values: list[Any] = [seq, source, capture_ns]
    for name, kind in fields:
        value = getattr(msg, name)
        if kind is int:
            if type(value) is not int:
                return None
        elif kind is float:
            if not (type(value) is float and value - value == 0.0) and type(value) is not int:
                return None
        elif kind is str:
            value = _json_text(value)
            if value is None:
                return None
        else:  # bool: no message type has one today; the Struct writer spells it
            return None
        values.append(value)
    buffers = []
    for name, dtypes, ndims in specs:
        a = getattr(msg, name)
        if type(a) is not np.ndarray or a.dtype not in dtypes or a.ndim not in ndims:
            return None
        if not a.flags.c_contiguous:
            a = np.ascontiguousarray(a)
        values += (_WIRE_NAME[a.dtype], _SHAPE_FORMAT[a.ndim] % a.shape)
        buffers.append(a)
    msg.check()
    return [topic, template % tuple(values), *buffers]


def _encode_plan(msg: Message) -> list[Any]:
    """`encode` for a type with a free-form field: the header's JSON from the type's cached plan."""
    topic, head, keys, arrays = _wire_plan(type(msg))
    parts = [head, _json_scalar(msg.seq), ',"source":', _json_scalar(msg.source), ',"capture_ns":',
             _json_scalar(msg.capture_ns), ',"fields":']
    if keys:
        for name, key in keys:
            parts += (key, _json_scalar(getattr(msg, name)))
        parts.append("}")
    else:
        parts.append("{}")
    parts.append(',"buffers":[')
    buffers = _wire_arrays(msg, arrays)
    for (_, _, opening), a in zip(arrays, buffers):
        parts += (opening, a.dtype.name, '","shape":[', ",".join(map(str, a.shape)), "]}")
    parts.append("]}")
    msg.check()
    return [topic, "".join(parts).encode(), *buffers]


def _wire_arrays(msg: Message, arrays: tuple[tuple[str, ArraySpec, str], ...]) -> list[np.ndarray]:
    """``msg``'s arrays as they go on the wire, in the plan's order: each checked against its spec (type,
    dtype, rank; the check raises saying which) and made C-contiguous in the machine's byte order."""
    out = []
    for name, spec, _ in arrays:
        a = getattr(msg, name)
        if not isinstance(a, np.ndarray):
            raise MessageError(f"{msg.type_name}.{name}: expected numpy array, got {type(a).__name__}")
        if a.dtype.name not in spec.dtypes or a.ndim not in spec.ndims:
            spec.check(msg.type_name, name, a)  # raises, saying which
        if not a.dtype.isnative:  # the wire is this machine's byte order (a big-endian AIFF read as is, say)
            a = a.astype(a.dtype.newbyteorder("="))
        out.append(a if a.flags.c_contiguous else np.ascontiguousarray(a))
    return out


def _bounded_int(text: str) -> int:
    """JSON integers, parsed only when short: a 4,300-digit literal costs quadratic time to parse,
    and one beyond Python's int() digit limit raises ValueError rather than a MessageError."""
    if len(text) > MAX_INT_DIGITS + 1 or (len(text) > MAX_INT_DIGITS and text[0] != "-"):
        raise MessageError(f"header integer of {len(text)} digits, limit {MAX_INT_DIGITS}", "limits")
    return int(text)


def _no_constant(text: str) -> Any:
    raise MessageError(f"header holds {text}: not JSON, and not a number any field may take", "header")


_HEADER_JSON = json.JSONDecoder(parse_int=_bounded_int, parse_constant=_no_constant)
#: the same without a Python call per integer: taken when the header holds no run of 20 digits anywhere
#: (so no integer literal longer than the bound can be in it), which is every header an encoder writes
_FAST_HEADER_JSON = json.JSONDecoder(parse_constant=_no_constant)
_LONG_DIGITS = re.compile(rb"\d{20}")
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def _check_depth(raw: bytes) -> None:
    """Refuse nesting deeper than MAX_JSON_DEPTH before parsing (the parser would recurse into it).

    Fewer openers than the limit cannot nest deeper, which settles every ordinary header with two
    ``bytes.count`` calls; only then are strings blanked out and the depth measured exactly."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return
    codes = np.frombuffer(_JSON_STRING.sub(b'""', raw), np.uint8)
    step = ((codes == ord("[")) | (codes == ord("{"))).astype(np.int32)
    step -= (codes == ord("]")) | (codes == ord("}"))
    if step.size and int(np.cumsum(step).max()) > MAX_JSON_DEPTH:
        raise MessageError(f"header nests deeper than {MAX_JSON_DEPTH} levels", "limits")


def decode(frames: list[bytes] | list[Any]) -> Message:
    """Multipart frames → validated Message. Every failure, whatever the bytes, is a MessageError saying why.

    Three decoders, each taking exactly what the next takes: the compiled one (`pipeline/_fastdecode.pyx`, where
    built) and `_decode_fast` take the common case cheaply and step aside for anything unusual; `_decode` is the
    careful one, which names what is wrong."""
    try:
        return ((_COMPILED_DECODE is not None and _COMPILED_DECODE(frames, _COMPILED_PLANS))
                or _decode_fast(frames) or _decode(frames))
    except MessageError:
        raise
    except Exception as exc:  # a check above missed a case: still one frame's problem, not the node's
        raise MessageError(f"undecodable frame ({type(exc).__name__}: {str(exc)[:120]})", "header") from None


@functools.cache
def _fast_rules(cls: type[Message]) -> tuple[tuple[tuple[str, Any, float, float, tuple[str, ...]], ...], dict[str, ArraySpec]]:
    """Per scalar field (name, JSON type, lo, hi, choices) as `_decode_fast` checks it: a field passes
    only if `_decode` would take it as is (a float field's bounds are finite, so NaN and ±inf fail)."""
    rules = []
    for name, allowed, is_float, bounds in _scalar_rules(cls):
        lo = -math.inf if bounds is None or bounds.lo is None else bounds.lo
        hi = math.inf if bounds is None or bounds.hi is None else bounds.hi
        kind = float if is_float else allowed[0]
        if is_float:
            lo, hi = max(lo, -1.7e308), min(hi, 1.7e308)
        rules.append((name, kind, lo, hi, bounds.choices if bounds is not None else ()))
    return tuple(rules), cls.array_fields()


@functools.cache
def _header_decoder(cls: type[Message]) -> msgspec.json.Decoder | None:
    """A compiled (msgspec) decoder for ``cls``'s headers that takes exactly what `_decode_fast`'s checks
    take: every key required and no other, each scalar's JSON type, range, length and choices, the
    envelope's ranges, and buffer descriptions as {name, dtype, shape of non-negative ints}. Anything it
    refuses goes to `_decode`, which says why (issue 17: parsing and checking a header in C is ~5× cheaper
    than json + Python checks). None when a field's kind has no such spelling (the json path then)."""
    types = _header_types(cls)
    return None if types is None else msgspec.json.Decoder(types[0])


@functools.cache
def _header_types(cls: type[Message]) -> tuple[type, type, type, tuple[str, ...]] | None:
    """(header, fields, buffer description) msgspec Struct types of ``cls``'s header, in the wire's key
    order, and the scalar fields' names in the fields type's order; the constraints act when decoding
    (building one to encode checks nothing)."""
    rules, arrays = _fast_rules(cls)
    fields: list[tuple[str, Any]] = []
    for name, kind, lo, hi, choices in rules:
        if kind is int:
            bounds = {k: v for k, v in (("ge", math.ceil(lo) if math.isfinite(lo) else None),
                                        ("le", math.floor(hi) if math.isfinite(hi) else None)) if v is not None}
            fields.append((name, typing.Annotated[int, msgspec.Meta(**bounds)] if bounds else int))
        elif kind is float:
            fields.append((name, typing.Annotated[float, msgspec.Meta(ge=lo, le=hi)]))
        elif kind is str:
            ok = tuple(c for c in choices if len(c) <= MAX_STR_CHARS)
            fields.append((name, typing.Literal[ok] if choices else
                           typing.Annotated[str, msgspec.Meta(max_length=MAX_STR_CHARS)]))
        elif kind is bool:
            fields.append((name, bool))
        else:
            return None
    strict = {"forbid_unknown_fields": True}
    body = msgspec.defstruct(f"{cls.type_name}Fields", fields, **strict)
    buffer = msgspec.defstruct(f"{cls.type_name}Buffer", [
        ("name", str), ("dtype", str), ("shape", list[typing.Annotated[int, msgspec.Meta(ge=0)]])], **strict)
    header = msgspec.defstruct(f"{cls.type_name}Header", [
        ("v", typing.Literal[SCHEMA_VERSION]), ("type", typing.Literal[cls.type_name]),
        ("seq", typing.Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]),
        ("source", typing.Annotated[str, msgspec.Meta(max_length=MAX_STR_CHARS)]),
        ("capture_ns", typing.Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]),
        ("fields", body),
        ("buffers", typing.Annotated[list[buffer], msgspec.Meta(min_length=len(arrays), max_length=len(arrays))]),
    ], **strict)
    return header, body, buffer, tuple(name for name, _ in fields)


def _parse_fast(cls: type[Message], raw: bytes) -> tuple[int, int, str, dict[str, Any], list] | None:
    """(seq, capture_ns, source, scalar fields, [(name, dtype, shape)]) of a header that passes every
    scalar check, or None."""
    decoder = _header_decoder(cls)
    if decoder is not None:  # typed: a long integer or deep nesting is refused at its first character
        try:
            h = decoder.decode(raw)
        except msgspec.MsgspecError:
            return None
        return (h.seq, h.capture_ns, h.source, msgspec.structs.asdict(h.fields),
                [(b.name, b.dtype, b.shape) for b in h.buffers])
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH or _LONG_DIGITS.search(raw) is not None:
        return None  # the json parser would recurse, or parse a long integer in quadratic time
    try:
        header = _FAST_HEADER_JSON.decode(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, MessageError, ValueError, RecursionError):
        return None
    if type(header) is not dict or header.get("v") != SCHEMA_VERSION or header.get("type") != cls.type_name:
        return None
    seq, capture_ns, source = header.get("seq"), header.get("capture_ns"), header.get("source")
    if (type(seq) is not int or type(capture_ns) is not int or type(source) is not str
            or not 0 <= seq <= INT64_MAX or not INT64_MIN <= capture_ns <= INT64_MAX or len(source) > MAX_STR_CHARS):
        return None
    fields = header.get("fields")
    rules, arrays = _fast_rules(cls)
    if type(fields) is not dict or len(fields) != len(rules):
        return None
    kwargs: dict[str, Any] = {}
    for name, kind, lo, hi, choices in rules:
        value = fields.get(name, _MISSING)
        vkind = type(value)
        if kind is int:
            if vkind is not int or not lo <= value <= hi:
                return None
        elif kind is float:
            if (vkind is not float and vkind is not int) or not lo <= value <= hi:
                return None
            value = float(value)
        elif kind is str:
            if vkind is not str or len(value) > MAX_STR_CHARS or (choices and value not in choices):
                return None
        elif vkind is not kind:
            return None
        kwargs[name] = value
    specs = header.get("buffers")
    if type(specs) is not list or len(specs) != len(arrays):
        return None
    out = []
    for spec in specs:
        if type(spec) is not dict:
            return None
        name, dtype, shape = spec.get("name"), spec.get("dtype"), spec.get("shape")
        if type(name) is not str or type(dtype) is not str or type(shape) is not list:
            return None
        if not all(type(d) is int and d >= 0 for d in shape):
            return None
        out.append((name, dtype, shape))
    return seq, capture_ns, source, kwargs, out


def _decode_fast(frames: list[bytes] | list[Any]) -> Message | None:
    """The common case, cheaply: a well-formed frame from an Earshot encoder. Returns the message, or
    None as soon as anything is unusual, and then `_decode` (the careful path, which says what is wrong)
    decides. It takes only what `_decode` takes, with the same checks on the same values; it just
    spends fewer Python steps on a message that passes them (issue 17: per-message cost on the hot
    path). Values are always checked: the non-finite test of float buffers, the byte ceilings."""
    if len(frames) < 2:
        return None
    topic, raw = frames[0], frames[1]
    topic = topic if type(topic) is bytes else _as_bytes(topic)
    raw = raw if type(raw) is bytes else _as_bytes(raw)
    cls = _REGISTRY_BY_TOPIC.get(topic)
    if cls is None or len(raw) > MAX_HEADER_BYTES:
        return None
    parsed = _parse_fast(cls, raw)
    if parsed is None:
        return None
    seq, capture_ns, source, kwargs, specs = parsed
    arrays = cls.array_fields()
    if len(specs) != len(arrays) or len(frames) != 2 + len(specs):
        return None
    declared = 0
    for (name, dtype, shape), frame in zip(specs, frames[2:]):
        rule = arrays.get(name)
        if rule is None or name in kwargs or dtype not in rule.dtypes or len(shape) not in rule.ndims:
            return None
        nbytes = ceiling = _ITEMSIZE[dtype]
        for d in shape:
            nbytes *= d
            ceiling *= d or 1  # as `_decode_buffer` counts a zero dimension
        declared += nbytes
        buf = frame.buffer if hasattr(frame, "buffer") else memoryview(frame)
        if ceiling > cls.max_bytes or declared > cls.max_bytes or buf.nbytes != nbytes or not buf.c_contiguous:
            return None  # (a strided frame: the careful path says so, where np.ndarray would read it in memory order)
        if not nbytes:
            kwargs[name] = np.zeros(shape, dtype)
            continue
        arr = np.ndarray(shape, _DTYPE[dtype], buf)  # a read-only view of the frame, as np.frombuffer gives
        if dtype in _FLOAT_DTYPES:
            _check_values(cls.type_name, name, arr, rule.max_abs)
        kwargs[name] = arr
    # every field is set from the header, checked above: the dataclass __init__ would only copy them
    msg = object.__new__(cls)
    msg.__dict__.update(kwargs, seq=seq, capture_ns=capture_ns, source=source)
    msg.check()
    return msg


_MISSING = object()


def _decode(frames: list[bytes] | list[Any]) -> Message:
    if len(frames) < 2:
        raise MessageError(f"expected [topic, header, *buffers], got {len(frames)} frame(s)", "header")
    raw_header = _as_bytes(frames[1])
    if len(raw_header) > MAX_HEADER_BYTES:
        raise MessageError(f"header is {len(raw_header)} bytes, limit {MAX_HEADER_BYTES}", "limits")
    _check_depth(raw_header)
    try:
        header = _HEADER_JSON.decode(raw_header.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise MessageError(f"header is not valid JSON: {str(exc)[:120]}", "header") from None
    if not isinstance(header, dict):
        raise MessageError("header is not a JSON object", "header")
    if header.get("v") != SCHEMA_VERSION:
        raise MessageError(f"schema version {header.get('v')!r:.40}, this build speaks {SCHEMA_VERSION}", "header")
    type_name = header.get("type")
    cls = _REGISTRY.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise MessageError(f"unknown message type {type_name!r:.60}", "header")
    topic = frames[0] if isinstance(frames[0], bytes) else _as_bytes(frames[0])
    if topic != type_name.encode():
        raise MessageError(f"topic {topic[:40]!r} does not match header type {type_name!r}", "header")

    envelope = {}
    for key, kind in (("seq", int), ("capture_ns", int), ("source", str)):
        value = header.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise MessageError(f"{type_name}: header field {key!r} must be {kind.__name__}, got {value!r:.40}",
                               "header")
        envelope[key] = value
    # capture_ns may be a little negative: a derived time (the first sample of a block) dates back
    # from a capture time, which in tests, or just after boot, is itself small
    if not (0 <= envelope["seq"] <= INT64_MAX and INT64_MIN <= envelope["capture_ns"] <= INT64_MAX):
        raise MessageError(f"{type_name}: seq must be in [0, 2**63), capture_ns an int64", "header")
    if len(envelope["source"]) > MAX_STR_CHARS:
        raise MessageError(f"{type_name}: source of {len(envelope['source'])} characters", "header")

    fields = header.get("fields")
    if not isinstance(fields, dict):
        raise MessageError(f"{type_name}: header 'fields' must be an object", "fields")
    kwargs: dict[str, Any] = {}
    for name, allowed, is_float, bounds in _scalar_rules(cls):
        if name not in fields:
            raise MessageError(f"{type_name}: missing field {name!r}", "fields")
        value = fields[name]
        if not isinstance(value, allowed) or (allowed != (bool,) and isinstance(value, bool)):
            raise MessageError(f"{type_name}.{name}: expected {allowed[0].__name__}, got {value!r:.40}", "fields")
        value = float(value) if is_float else value  # bounds hold what is stored (an integer, rounded), as msgspec's
        if bounds is not None:
            bounds.check(type_name, name, value)
        kwargs[name] = value
    if len(fields) != len(kwargs):
        raise MessageError(f"{type_name}: unexpected fields {sorted(set(fields) - set(kwargs))!r:.80}", "fields")

    specs = header.get("buffers")
    arrays = cls.array_fields()
    if not isinstance(specs, list) or len(specs) != len(arrays) or len(specs) > MAX_BUFFERS:
        raise MessageError(f"{type_name}: expected {len(arrays)} buffer descriptions, got {specs!r:.80}", "buffers")
    if len(frames) != 2 + len(specs):
        raise MessageError(f"{type_name}: header announces {len(specs)} buffers, message has {len(frames) - 2}",
                           "buffers")
    declared = 0
    for spec, frame in zip(specs, frames[2:]):
        name, arr = _decode_buffer(cls, spec, frame, arrays)
        declared += arr.nbytes
        if declared > cls.max_bytes:
            raise MessageError(f"{type_name}: buffers of {declared} bytes, limit {cls.max_bytes}", "limits")
        kwargs[name] = arr
    if len(kwargs) != len(arrays) + len(cls.scalar_fields()):
        raise MessageError(f"{type_name}: buffers {[s.get('name') for s in specs]!r:.80} do not match {list(arrays)}",
                           "buffers")
    msg = cls(**envelope, **kwargs)
    msg.check()  # dtypes and ranks were checked buffer by buffer above
    return msg


def _decode_buffer(cls: type[Message], spec: Any, frame: Any, arrays: dict[str, ArraySpec]) -> tuple[str, np.ndarray]:
    type_name = cls.type_name
    if not isinstance(spec, dict):
        raise MessageError(f"{type_name}: buffer description {spec!r:.60} is not an object", "buffers")
    name, dtype, shape = spec.get("name"), spec.get("dtype"), spec.get("shape")
    if not isinstance(name, str) or name not in arrays:
        raise MessageError(f"{type_name}: unknown buffer {name!r:.40}", "buffers")
    if not isinstance(dtype, str) or dtype not in WIRE_DTYPES:
        raise MessageError(f"{type_name}.{name}: dtype {dtype!r:.40} is not allowed on the wire", "buffers")
    if (not isinstance(shape, list) or len(shape) > 8
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise MessageError(f"{type_name}.{name}: bad shape {shape!r:.80}", "buffers")
    arrays[name].check_layout(type_name, name, dtype, tuple(shape))
    # the size the shape declares, with a zero dimension counted as 1: (0, 2**40) is no more
    # acceptable than (1, 2**40), and numpy could not even represent it
    itemsize = _ITEMSIZE[dtype]
    if math.prod(d or 1 for d in shape) * itemsize > cls.max_bytes:
        raise MessageError(f"{type_name}.{name}: shape {shape} exceeds {cls.max_bytes} bytes", "limits")
    buf = frame.buffer if hasattr(frame, "buffer") else memoryview(frame)
    nbytes = math.prod(shape) * itemsize
    if buf.nbytes != nbytes:
        raise MessageError(f"{type_name}.{name}: {buf.nbytes} bytes on the wire, {dtype}{tuple(shape)} needs {nbytes}",
                           "buffers")
    if not nbytes:
        return name, np.zeros(shape, dtype)
    arr = np.frombuffer(buf, dtype=dtype).reshape(shape)
    if dtype in _FLOAT_DTYPES:
        _check_values(type_name, name, arr, arrays[name].max_abs)
    return name, arr


_FLOAT_DTYPES = frozenset(["float16", "float32", "float64", "complex64", "complex128"])


def _check_values(type_name: str, name: str, arr: np.ndarray, max_abs: float) -> None:
    """Every element finite and within ±max_abs, cheaply: the sum of squares (one BLAS dot, ~1 µs
    for an audio chunk) bounds every element's square, so when it is finite and at most max_abs²
    all is well. Only otherwise (or for float16: no BLAS) look element by element."""
    if arr.dtype != np.float16:
        energy = float(np.vdot(arr, arr).real)
        if math.isfinite(energy) and energy <= max_abs * max_abs:
            return
    if not np.isfinite(arr).all():
        raise MessageError(f"{type_name}.{name}: holds NaN or infinity", "non-finite")
    peak = float(np.abs(arr).max())
    if peak > max_abs:
        raise MessageError(f"{type_name}.{name}: magnitude {peak:.3g} beyond {max_abs:g}", "out of range")


def _as_bytes(frame: Any) -> bytes:
    if hasattr(frame, "bytes"):  # zmq.Frame
        return frame.bytes
    return bytes(frame)


def _compiled_plan(topic: bytes) -> tuple | bool | None:
    """What the compiled decoder needs of the type ``topic`` names, resolved once: (class, its msgspec header
    decoder, scalar field names, per array field ({dtype name: (numpy dtype, item size, value check)}, ranks,
    magnitude limit), buffer byte limit, the type's own ``check`` or None). False for a type whose header has no
    typed decoder (the Python decoders take it); None for a topic that names no type."""
    cls = _REGISTRY_BY_TOPIC.get(topic)
    if cls is None:
        return None
    types = _header_types(cls)
    if types is None:
        return False
    from pipeline._fastdecode import VALUE_CHECKS

    arrays = {name: ({d: (_DTYPE[d], _ITEMSIZE[d], VALUE_CHECKS.get(d, 0)) for d in spec.dtypes}, spec.ndims,
                     float(spec.max_abs))
              for name, spec in cls.array_fields().items()}
    check = cls.check if cls.check is not Message.check else None
    return cls, _header_decoder(cls), types[3], arrays, cls.max_bytes, check, _header_layout(cls)


def _header_layout(cls: type[Message]) -> tuple[tuple, bytes] | None:
    """The type's encoder template (`_header_template`) as the compiled decoder matches it: per value, the literal
    before it and what it is, with the bounds msgspec's typed decoder holds it to; then the literal after the last.
    None for a type without a template."""
    from pipeline._fastdecode import SLOTS

    template = _header_template(cls)
    if not template:
        return None
    literals = re.split(rb"%[dsr]", template[1])
    rules, arrays = _fast_rules(cls)

    def whole(lo: float, hi: float) -> tuple[int, int]:  # an int field's bounds, within int64
        return (max(INT64_MIN, math.ceil(lo)) if math.isfinite(lo) else INT64_MIN,
                min(INT64_MAX, math.floor(hi)) if math.isfinite(hi) else INT64_MAX)

    values: list[tuple] = [(SLOTS["int"], "seq", 0, INT64_MAX, None), (SLOTS["str"], "source", 0, MAX_STR_CHARS, None),
                           (SLOTS["int"], "capture_ns", INT64_MIN, INT64_MAX, None)]
    for name, kind, lo, hi, choices in rules:
        if kind is int:
            values.append((SLOTS["int"], name, *whole(lo, hi), None))
        elif kind is float:
            values.append((SLOTS["float"], name, float(lo), float(hi), None))
        else:  # str: the template takes no other kind
            values.append((SLOTS["str"], name, 0, MAX_STR_CHARS, tuple(choices) if choices else None))
    for k, spec in enumerate(arrays.values()):
        values += [(SLOTS["dtype"], "", 0, 0, {d.encode(): d for d in spec.dtypes}), (SLOTS["shape"], "", k, 0, None)]
    if len(literals) != len(values) + 1:  # the template and this reading of it disagree: msgspec reads it all
        return None
    return tuple((literal, *value) for literal, value in zip(literals, values)), literals[-1]


def _python_transport() -> bool:
    """``EARSHOT_PYTHON_READ=1``: the transport's compiled parts (read and decode) stay unused and it works in Python,
    the benchmark's and the tests' A/B. Asked by both (`pipeline.transport` too), so the switch is spelled once."""
    import os

    return os.environ.get("EARSHOT_PYTHON_READ") == "1"


def _compiled_decode():
    """`pipeline/_fastdecode.pyx`'s decode, or None: not built (no compiler at install), or the transport in Python
    (`_python_transport`)."""
    if _python_transport():
        return None
    try:
        from pipeline import _fastdecode
    except ImportError:
        return None
    _fastdecode.configure(_check_values, _compiled_plan, np.zeros, MAX_HEADER_BYTES)
    return _fastdecode.decode


#: topic → the compiled decoder's plan for its type, filled as topics are first seen
_COMPILED_PLANS: dict[bytes, tuple | bool] = {}
_COMPILED_DECODE = _compiled_decode()
