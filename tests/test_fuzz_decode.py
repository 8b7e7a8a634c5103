"""Property: whatever bytes arrive, ``decode`` returns a valid message or raises MessageError, nothing else.

Random frames, valid messages with mutated headers (any JSON where any value was), deep nesting,
integers of thousands of digits, shapes and dtypes that lie. A message that does decode must be
one the schema allows: it re-encodes and decodes to itself. And neither hot path (``_decode_fast``, and the
compiled one where it is built) takes what the careful path (``_decode``) refuses: where one returns a message, the
careful path returns the same one; where it refuses, so does the careful path.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.messages import (_COMPILED_DECODE, _COMPILED_PLANS, Message, MessageError, _decode, _decode_fast, decode,
                               encode)
from tests.test_messages import examples, wire

#: more with EARSHOT_FUZZ_EXAMPLES=5000 (a longer search, same seed)
FUZZ = settings(max_examples=int(os.environ.get("EARSHOT_FUZZ_EXAMPLES", "300")), deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

VALID = [wire(m) for m in examples()]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def same_message(a: Message, b: Message) -> bool:
    wa, wb = encode(a), encode(b)
    return wa[:2] == wb[:2] and all(x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True)
                                    for x, y in zip(wa[2:], wb[2:]))


def _compiled(frames: list) -> Message | None:
    return _COMPILED_DECODE(frames, _COMPILED_PLANS)


#: the hot paths: the Python one, and the compiled one where it is built
HOT_PATHS = [_decode_fast] + ([_compiled] if _COMPILED_DECODE is not None else [])


def fast_agrees_with_careful(frames: list) -> None:
    for hot in HOT_PATHS:
        hot_agrees_with_careful(hot, list(frames))


def hot_agrees_with_careful(hot, frames: list) -> None:
    try:
        fast = hot(frames)
    except MessageError:
        fast = "refused"
    if fast is None:
        return  # the careful path decides alone
    try:
        careful = _decode(frames)
    except MessageError:
        assert fast == "refused", f"the fast path took a message the careful path refuses: {frames[:2]!r:.300}"
        return
    except Exception:  # decode() turns these into MessageError; the fast path must refuse too
        assert fast == "refused"
        return
    assert fast != "refused", f"the fast path refused a message the careful path takes: {frames[:2]!r:.300}"
    assert same_message(fast, careful)


def decodes_or_refuses(frames: list) -> Message | None:
    """The property, with what a decoded message must satisfy."""
    fast_agrees_with_careful(frames)
    try:
        msg = decode(frames)
    except MessageError as exc:
        assert exc.kind in ("header", "limits", "fields", "buffers", "non-finite", "out of range", "schema"), exc.kind
        return None
    again = decode([*encode(msg)[:2], *(a.tobytes() for a in encode(msg)[2:])])
    assert type(again) is type(msg)
    return msg


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=6))
def test_random_frames(frames: list[bytes]) -> None:
    decodes_or_refuses(frames)


@FUZZ
@given(st.sampled_from(VALID), st.data())
def test_valid_messages_with_any_header_value_replaced(frames: list[bytes], data) -> None:
    """Walk to any place in the header (a field, a buffer description, a shape entry) and put any JSON there."""
    header = json.loads(frames[1])
    node: dict | list = header
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = data.draw(st.sampled_from(keys))
        child = node[key]
        if not (isinstance(child, (dict, list)) and child and data.draw(st.booleans())):
            break
        node = child  # go deeper
    node[key] = data.draw(json_values)
    decodes_or_refuses([frames[0], json.dumps(header).encode(), *frames[2:]])


@FUZZ
@given(st.sampled_from(VALID), st.data())
def test_valid_messages_with_damaged_bytes(frames: list[bytes], data) -> None:
    frames = list(frames)
    i = data.draw(st.integers(0, len(frames) - 1))
    raw = bytearray(frames[i])
    for _ in range(data.draw(st.integers(1, 6))):
        what = data.draw(st.sampled_from(["flip", "cut", "grow"]))
        if what == "flip" and raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        elif what == "cut":
            raw = raw[: data.draw(st.integers(0, len(raw)))]
        else:
            raw += data.draw(st.binary(min_size=1, max_size=16))
    frames[i] = bytes(raw)
    decodes_or_refuses(frames)


@FUZZ
@given(st.sampled_from(VALID), st.integers(1, 60_000), st.sampled_from(["[", "{\"a\":"]),
       st.sampled_from(["fields", "buffers", "seq", "root"]))
def test_deeply_nested_json(frames: list[bytes], depth: int, opener: str, where: str) -> None:
    closer = "]" if opener == "[" else "}"
    nested = opener * depth + "1" + closer * depth
    header = frames[1].decode()
    text = nested if where == "root" else header.replace(f'"{where}":', f'"{where}":{nested},"_{where}":', 1)
    assert decodes_or_refuses([frames[0], text.encode(), *frames[2:]]) is None


@FUZZ
@given(st.sampled_from(VALID), st.integers(1, 6000), st.sampled_from(["seq", "capture_ns", "shape", "field"]),
       st.booleans())
def test_integers_of_any_length(frames: list[bytes], digits: int, where: str, negative: bool) -> None:
    number = ("-" if negative else "") + "9" * digits
    header = json.loads(frames[1])
    if where == "shape" and header["buffers"]:
        header["buffers"][0]["shape"] = ["__N__", *header["buffers"][0]["shape"][1:]]
    elif where == "field" and header["fields"]:
        header["fields"][next(iter(header["fields"]))] = "__N__"
    else:
        header[where if where in ("seq", "capture_ns") else "seq"] = "__N__"
    text = json.dumps(header).replace('"__N__"', number)
    msg = decodes_or_refuses([frames[0], text.encode(), *frames[2:]])
    assert msg is None or digits <= 19


@FUZZ
@given(st.sampled_from([f for f in VALID if len(f) > 2]),
       st.lists(st.integers(-2, 2**64) | st.sampled_from([0, 1, 2**31, 2**40, 2**62]), max_size=9),
       st.sampled_from(["uint8", "float32", "complex64", "int64", "object", "<f4", "float128", "", "V16", "bool"]))
def test_shapes_and_dtypes_that_lie(frames: list[bytes], shape: list[int], dtype: str) -> None:
    header = json.loads(frames[1])
    header["buffers"][0]["shape"] = shape
    header["buffers"][0]["dtype"] = dtype
    msg = decodes_or_refuses([frames[0], json.dumps(header).encode(), *frames[2:]])
    if msg is not None:  # it can only have decoded if the shape described the bytes exactly
        declared = getattr(msg, header["buffers"][0]["name"])
        assert list(declared.shape) == shape and declared.nbytes == len(frames[2])


@FUZZ
@given(st.sampled_from([f for f in VALID if len(f) > 2]), st.sampled_from([np.nan, np.inf, -np.inf, 1e30]))
def test_non_finite_or_absurd_floats_never_pass(frames: list[bytes], value: float) -> None:
    header = json.loads(frames[1])
    buffers = list(frames[2:])
    for i, spec in enumerate(header["buffers"]):
        if spec["dtype"].startswith(("float", "complex")) and buffers[i]:
            a = np.frombuffer(buffers[i], spec["dtype"]).copy()
            with np.errstate(over="ignore"):
                a[len(a) // 2] = value
            buffers[i] = a.tobytes()
            msg = decodes_or_refuses([frames[0], frames[1], *buffers])
            assert msg is None or (value == 1e30 and spec["dtype"] != "float16" and "Audio" not in header["type"])
            return


def test_the_fast_path_takes_every_valid_example() -> None:
    """Else the agreement above would hold vacuously: every message an encoder writes goes the fast way."""
    for frames in VALID:
        msg = _decode_fast(frames)
        assert msg is not None, frames[1]
        assert same_message(msg, _decode(frames))


def test_the_compiled_path_takes_every_valid_example_of_a_typed_header() -> None:
    """Likewise for the compiled decoder: it takes every example but the Heartbeat (no typed header decoder), and
    hands over the same message, its arrays read-only views as the Python decoders give."""
    if _COMPILED_DECODE is None:
        if os.environ.get("EARSHOT_REQUIRE_COMPILED") == "1":
            raise AssertionError("the compiled decoder (pipeline/_fastdecode) is not built, and EARSHOT_REQUIRE_COMPILED=1")
        return  # nothing compiled to agree: the Python paths above are the decoder
    for frames in VALID:
        msg = _compiled(list(frames))
        if frames[0] == b"Heartbeat":
            assert msg is None
            continue
        assert msg is not None, frames[1]
        careful = _decode(frames)
        assert same_message(msg, careful)
        for name in ("seq", "capture_ns", "source", *msg.scalar_fields()):  # the same values of the same types
            mine, theirs = getattr(msg, name), getattr(careful, name)
            assert mine == theirs and type(mine) is type(theirs), name
        for name in msg.array_fields():
            arr = getattr(msg, name)
            assert arr.flags.aligned and arr.flags.c_contiguous
            assert not arr.flags.writeable or arr.size == 0  # an empty one is np.zeros, as the Python decoders make it


def test_every_hot_message_type_has_a_compiled_header_decoder() -> None:
    """The compiled (msgspec) decoder serves every type whose fields it can spell; only a type with a free-form
    field (the once-a-second Heartbeat's stats dict) takes the json path, and a stray dict field elsewhere
    would show here rather than as a silent slowdown."""
    from pipeline.messages import _header_decoder, message_types

    json_path = {name for name, cls in message_types().items() if _header_decoder(cls) is None}
    assert json_path == {"Heartbeat"}


@FUZZ
@given(st.sampled_from(["audio", "spectrum"]), st.integers(1, 70_000), st.data())
def test_values_at_the_limit_are_judged_alike_on_every_path(kind: str, size: int, data) -> None:
    """A float buffer's value check, where the compiled loop and the Python checker could part: elements at, just
    above and just below the type's magnitude limit, complex ones whose parts are each within it but whose modulus
    is not, non-finite ones, buffers on either side of the size where the compiled path hands over to BLAS."""
    from pipeline.messages import AudioChunk, Spectrogram

    limit = (AudioChunk if kind == "audio" else Spectrogram).array_fields()["samples" if kind == "audio" else "frames"]
    limit = limit.max_abs
    n = size if kind == "audio" else max(1, size // 257)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    values = rng.uniform(-0.5, 0.5, n * (1 if kind == "audio" else 257 * 2)).astype(np.float32) * np.float32(limit)
    for _ in range(data.draw(st.integers(0, 3))):
        at = data.draw(st.integers(0, values.size - 1))
        values[at] = data.draw(st.sampled_from([limit, -limit, np.nextafter(np.float32(limit), np.float32(np.inf)),
                                                np.nextafter(np.float32(limit), np.float32(0)), 0.75 * limit,
                                                np.nan, np.inf, -np.inf]))
    if kind == "audio":
        msg = AudioChunk(samples=np.zeros(n, np.float32))
        frames = [*wire(msg)[:2], values.tobytes()]
    else:
        msg = Spectrogram(frames=np.zeros((n, 257), np.complex64))
        frames = [*wire(msg)[:2], values.tobytes()]
    decodes_or_refuses(frames)
    if _COMPILED_DECODE is not None:  # no silent fall-through: the compiled path decided, or said why not
        try:
            got = _compiled(list(frames))
        except MessageError:
            got = "refused"
        ok = bool(np.isfinite(values).all()) and float(np.abs(values.view(np.float32 if kind == "audio"
                                                                            else np.complex64)).max()) <= limit
        assert (got not in (None, "refused")) == ok


def _typed_reading(cls, raw: bytes):
    """What msgspec's typed decoder takes from a header: (values by field, dtypes, shapes), or None."""
    import msgspec

    from pipeline.messages import _header_decoder

    try:
        h = _header_decoder(cls).decode(raw)
    except msgspec.MsgspecError:
        return None
    values = {**msgspec.structs.asdict(h.fields), "seq": h.seq, "capture_ns": h.capture_ns, "source": h.source}
    return values, [b.dtype for b in h.buffers], [b.shape for b in h.buffers], [b.name for b in h.buffers]


def _template_agrees_with_msgspec(topic: bytes, raw: bytes) -> bool:
    """The compiled template reading takes a header only as msgspec's decoder reads it: the same values, of the same
    types. Returns whether it took it."""
    from pipeline._fastdecode import read_header
    from pipeline.messages import _REGISTRY_BY_TOPIC, _header_layout

    cls = _REGISTRY_BY_TOPIC[topic]
    got = read_header(raw, _header_layout(cls))
    if got is None:
        return False
    typed = _typed_reading(cls, raw)
    assert typed is not None, f"the template reading took a header msgspec refuses: {raw!r:.300}"
    values, dtypes, shapes, names = typed
    assert names == list(cls.array_fields()), raw
    def spelled(v):  # a value and its type, a float's sign included (-0.0 == 0.0)
        return (type(v), repr(v))

    assert {k: spelled(v) for k, v in got[0].items()} == {k: spelled(v) for k, v in values.items()}, raw
    assert (got[1], got[2]) == (dtypes, shapes), raw
    return True


TYPED = [f for f in VALID if f[0] != b"Heartbeat"]


def test_the_template_reading_takes_every_header_an_encoder_writes() -> None:
    if _COMPILED_DECODE is None:
        return  # not built: the Python decoders read every header (the compiled tests fail in CI instead)
    for frames in TYPED:
        assert _template_agrees_with_msgspec(frames[0], frames[1]), frames[1]


@FUZZ
@given(st.sampled_from(TYPED), st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(["replace", "insert", "delete"]),
                                                  st.sampled_from(list(b'0123456789-+.eE",:[]{} \\\x80\x00x'))),
                                        min_size=1, max_size=3))
def test_edited_headers_are_read_by_the_template_only_as_msgspec_reads_them(frames: list[bytes], edits) -> None:
    """Byte edits keep a header compact, so the template reading gets a say (a json.dumps rewrite never matches it):
    digits longer or shorter, signs, exponents, leading zeros, quotes and escapes, a stray byte."""
    if _COMPILED_DECODE is None:
        return
    raw = bytearray(frames[1])
    for at, op, byte in edits:
        at %= len(raw) + (op == "insert")
        if op == "replace" and at < len(raw):
            raw[at] = byte
        elif op == "insert":
            raw.insert(at, byte)
        elif at < len(raw):
            del raw[at]
    _template_agrees_with_msgspec(frames[0], bytes(raw))
    decodes_or_refuses([frames[0], bytes(raw), *frames[2:]])


_NUMBERS = st.one_of(st.integers(-(2**70), 2**70).map(str), st.floats(allow_nan=False).map(repr),
                     st.sampled_from(["0", "-0", "00", "01", "-01", "1.", ".5", "1e5", "1E+05", "1e-400", "1e400",
                                      "-1.5e-3", "9223372036854775807", "9223372036854775808", "-9223372036854775808",
                                      "-9223372036854775809", "18446744073709551616", "0.0", "1_0", "0x10", "+1"]))
_STRINGS = st.text(max_size=12).map(json.dumps) | st.sampled_from(['"a\\"b"', '"\\u00e9"', '"é"', '""', '"complex"',
                                                                  '"logmel"', '"x"'])


@FUZZ
@given(st.sampled_from(TYPED), st.data())
def test_values_in_every_spelling_are_read_by_the_template_only_as_msgspec_reads_them(frames, data) -> None:
    """Each value of a compact header respelled: integers past int64, leading zeros, a negative zero, floats in
    exponent form, out of range or beyond a double, strings with escapes or non-ASCII, shapes with odd entries."""
    if _COMPILED_DECODE is None:
        return
    import re

    raw = frames[1].decode()
    spots = [(m.start(2), m.end(2)) for m in re.finditer(r'("[a-z_]+":)(-?[0-9.eE+-]+|"[^"]*")', raw)]
    spots += [(m.start(1), m.end(1)) for m in re.finditer(r'"shape":\[([0-9,]*)\]', raw)]
    start, end = data.draw(st.sampled_from(spots))
    old = raw[start:end]
    new = data.draw(_STRINGS if old.startswith('"') else st.lists(_NUMBERS, min_size=1, max_size=4).map(",".join)
                    if raw[start - 1] == "[" else _NUMBERS)
    edited = (raw[:start] + new + raw[end:]).encode("utf-8", "surrogatepass")
    _template_agrees_with_msgspec(frames[0], edited)
    decodes_or_refuses([frames[0], edited, *frames[2:]])


@pytest.mark.parametrize("value", [4.9592653e+08 + 8.683645e+08j, 6e8 + 8e8j, 1e9 + 0j, 7.0710677e8 + 7.0710677e8j,
                                   7.07e8 + 7.07e8j])
def test_complex_values_at_the_limit_are_judged_alike(value: complex) -> None:
    """A modulus a hair from the limit, where double and float32 arithmetic part (found in review): the compiled
    path leaves it to the Python checker, so every path says the same."""
    from pipeline.messages import Spectrogram

    frames = wire(Spectrogram(frames=np.zeros((1, 4), np.complex64)))
    z = np.zeros((1, 4), np.complex64)
    z[0, 1] = value
    fast_agrees_with_careful([frames[0], frames[1], z.tobytes()])


def test_a_frame_that_is_no_plain_buffer_is_refused_with_a_reason() -> None:
    """A Fortran-ordered array or a released memoryview as a frame: the compiled path steps aside (it used to let
    numpy's BufferError out), and decode names what is wrong."""
    from pipeline.messages import VideoFrame

    frames = wire(VideoFrame(image=np.zeros((4, 6, 3), np.uint8)))
    fortran = np.asfortranarray(np.zeros((6, 12), np.uint8))
    released = memoryview(b"\\0" * 72)
    released.release()
    for frame in (fortran, released):
        if _COMPILED_DECODE is not None:
            assert _compiled([frames[0], frames[1], frame]) is None
        with pytest.raises(MessageError):
            decode([frames[0], frames[1], frame])
