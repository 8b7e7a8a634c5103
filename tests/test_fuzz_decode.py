"""Property: whatever bytes arrive, ``decode`` returns a valid message or raises MessageError, nothing else.

Random frames, valid messages with mutated headers (any JSON where any value was), deep nesting,
integers of thousands of digits, shapes and dtypes that lie. A message that does decode must be
one the schema allows: it re-encodes and decodes to itself. And the hot path (``_decode_fast``) never
takes what the careful path (``_decode``) refuses: where it returns a message, the careful path returns
the same one; where it refuses, so does the careful path.
"""

from __future__ import annotations

import json
import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.messages import Message, MessageError, _decode, _decode_fast, decode, encode
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


def fast_agrees_with_careful(frames: list) -> None:
    try:
        fast = _decode_fast(frames)
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


def test_every_hot_message_type_has_a_compiled_header_decoder() -> None:
    """The compiled (msgspec) decoder serves every type whose fields it can spell; only a type with a free-form
    field (the once-a-second Heartbeat's stats dict) takes the json path, and a stray dict field elsewhere
    would show here rather than as a silent slowdown."""
    from pipeline.messages import _header_decoder, message_types

    json_path = {name for name, cls in message_types().items() if _header_decoder(cls) is None}
    assert json_path == {"Heartbeat"}
