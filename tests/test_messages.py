"""Wire format: every message type round-trips; every malformed frame is refused clearly."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pipeline.messages import (ActiveSpeaker, AudioChunk, Control, Embedding, EndOfStream, FaceTracks, FeatureMap, Heartbeat,
                               Heatmap, Message, MessageError, SeparatedAudio, Spectrogram, VideoFrame, decode,
                               encode, message_types)


def wire(msg: Message) -> list[bytes]:
    frames = encode(msg)
    return [*frames[:2], *(f.tobytes() for f in frames[2:])]


def examples() -> list[Message]:
    rng = np.random.default_rng(0)
    return [
        VideoFrame(image=rng.integers(0, 255, (7, 5, 3), dtype=np.uint8), frame_index=3, pts_s=0.12,
                   capture_ns=123, seq=4, source="camera"),
        AudioChunk(samples=rng.standard_normal(160).astype(np.float32), first_sample=320),
        ActiveSpeaker(track_ids=np.array([3, 7]), scores=np.array([0.1, 0.4], np.float32),
                      boxes=rng.random((2, 4)).astype(np.float32), speaking_track_id=7, speaking_score=0.4,
                      frame_width=640, frame_height=360),
        AudioChunk(samples=rng.standard_normal((160, 2)).astype(np.float32), sample_rate_hz=48000),
        Spectrogram(frames=(rng.standard_normal((3, 257)) + 1j * rng.standard_normal((3, 257))).astype(np.complex64)),
        Spectrogram(frames=rng.standard_normal((100, 64)).astype(np.float32), kind="logmel"),
        FeatureMap(features=rng.standard_normal((16, 14, 14)).astype(np.float16), frame_index=9),
        Embedding(vector=rng.standard_normal(128).astype(np.float32), window_s=1.0),
        Heatmap(heatmap=rng.random((14, 14)).astype(np.float32)),
        FaceTracks(boxes=np.zeros((0, 4), np.float32), track_ids=np.zeros(0, np.int64),
                   lip_features=np.zeros((0, 12), np.float32)),
        FaceTracks(boxes=rng.random((2, 4)).astype(np.float32), track_ids=np.array([3, 7]),
                   lip_features=rng.random((2, 12)).astype(np.float32), frame_width=640, frame_height=360),
        SeparatedAudio(samples=rng.standard_normal((2, 160)).astype(np.float32), track_ids=np.array([3, 7])),
        Heartbeat(node="camera", pid=42, stats={"inputs": {}, "compute_ms": {"p50": 1.5}}),
        Control(command="start", epoch_ns=99),
        EndOfStream(reason="file ended"),
    ]


def assert_same(a: Message, b: Message) -> None:
    assert type(a) is type(b)
    for name in a.array_fields():
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)
    for name in ["capture_ns", "seq", "source", *a.scalar_fields()]:
        assert getattr(a, name) == getattr(b, name), name


@pytest.mark.parametrize("msg", examples(), ids=lambda m: m.type_name)
def test_round_trip_every_type(msg: Message) -> None:
    assert_same(msg, decode(wire(msg)))


def test_every_registered_type_has_an_example() -> None:
    covered = {type(m).__name__ for m in examples()}
    assert set(message_types()) <= covered


@settings(max_examples=60, deadline=None, derandomize=True)
@given(hnp.arrays(dtype=st.sampled_from([np.float16, np.float32, np.float64]),
                  shape=hnp.array_shapes(min_dims=3, max_dims=3, min_side=0, max_side=9),
                  elements={"allow_nan": False, "allow_infinity": False, "min_value": -6e4, "max_value": 6e4}))
def test_feature_maps_of_any_shape_round_trip(features: np.ndarray) -> None:
    if features.dtype == np.float64:
        with pytest.raises(MessageError, match="dtype float64"):
            encode(FeatureMap(features=features))
        return
    out = decode(wire(FeatureMap(features=features)))
    np.testing.assert_array_equal(out.features, features)


def test_non_contiguous_arrays_are_sent_correctly() -> None:
    image = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)[:, ::2]  # a strided view
    out = decode(wire(VideoFrame(image=image)))
    np.testing.assert_array_equal(out.image, image)


def test_arrays_in_another_byte_order_arrive_with_their_values() -> None:
    """The wire names a dtype, not a byte order: a big-endian array goes in the machine's order, not as
    bytes a reader would misread."""
    samples = np.linspace(-0.5, 0.5, 160).astype(">f4")
    out = decode(wire(AudioChunk(samples=samples)))
    np.testing.assert_array_equal(out.samples, samples)


def test_encoding_checks_the_schema() -> None:
    with pytest.raises(MessageError, match="VideoFrame.image: dtype float32"):
        encode(VideoFrame(image=np.zeros((2, 2, 3), np.float32)))
    with pytest.raises(MessageError, match="expected H×W×3"):
        encode(VideoFrame(image=np.zeros((2, 2, 4), np.uint8)))
    with pytest.raises(MessageError, match="must agree on N"):
        encode(FaceTracks(boxes=np.zeros((2, 4), np.float32), track_ids=np.zeros(1, np.int64),
                          lip_features=np.zeros((2, 3), np.float32)))


def _header(frames: list[bytes]) -> dict:
    return json.loads(frames[1])


def _with_header(frames: list[bytes], **changes) -> list[bytes]:
    header = _header(frames)
    header.update(changes)
    return [frames[0], json.dumps(header).encode(), *frames[2:]]


GOOD = wire(VideoFrame(image=np.zeros((4, 4, 3), np.uint8)))


@pytest.mark.parametrize("frames, error", [
    ([], "got 0 frame"),
    (GOOD[:2], "announces 1 buffers, message has 0"),  # truncated: payload missing
    ([GOOD[0], GOOD[1], GOOD[2][:-1]], "47 bytes on the wire"),  # truncated payload
    ([GOOD[0], GOOD[1], GOOD[2] + b"x"], "49 bytes on the wire"),
    ([GOOD[0], b"\xff\xfe garbage", GOOD[2]], "not valid JSON"),
    ([GOOD[0], b"[1, 2]", GOOD[2]], "not a JSON object"),
    (_with_header(GOOD, v=2), "schema version 2"),
    (_with_header(GOOD, type="Pickle"), "unknown message type 'Pickle'"),
    ([b"AudioChunk", *GOOD[1:]], "does not match header type"),
    (_with_header(GOOD, seq="7"), "'seq' must be int"),
    (_with_header(GOOD, fields={"frame_index": 1.5, "pts_s": 0.0}), "frame_index: expected int"),
    (_with_header(GOOD, fields={"frame_index": 1, "pts_s": 0.0, "evil": 1}), "unexpected fields"),
    (_with_header(GOOD, buffers=[{"name": "image", "dtype": "object", "shape": [16]}]), "not allowed on the wire"),
    (_with_header(GOOD, buffers=[{"name": "image", "dtype": "uint8", "shape": [4, 4, -3]}]), "bad shape"),
    (_with_header(GOOD, buffers=[{"name": "image", "dtype": "uint8", "shape": [48]}]), "has 1 dims"),
    (_with_header(GOOD, buffers=[{"name": "pixels", "dtype": "uint8", "shape": [4, 4, 3]}]), "unknown buffer"),
    ([GOOD[0], pickle.dumps({"v": 1}), GOOD[2]], "not valid JSON"),
], ids=lambda x: x if isinstance(x, str) else None)
def test_malformed_frames_are_rejected_with_a_reason(frames: list[bytes], error: str) -> None:
    with pytest.raises(MessageError, match=error):
        decode(frames)


def test_received_arrays_are_read_only_views() -> None:
    """Zero-copy on receive: nodes must copy before writing into a received frame."""
    out = decode(GOOD)
    with pytest.raises(ValueError):
        out.image[0, 0, 0] = 1


# -- limits: nothing in a header decides how much is allocated or how deep anything recurses ---

def _declare(frames: list[bytes], **buffer) -> list[bytes]:
    header = _header(frames)
    header["buffers"] = [{**header["buffers"][0], **buffer}]
    return [frames[0], json.dumps(header).encode(), *frames[2:]]


AUDIO = wire(AudioChunk(samples=np.zeros(160, np.float32), first_sample=320, capture_ns=5, source="microphone"))
SPECTRUM = wire(Spectrogram(frames=np.zeros((1, 3), np.complex64)))


@pytest.mark.parametrize("frames, kind, error", [
    ([GOOD[0], b"[" * 20000 + b"]" * 20000, GOOD[2]], "limits", "nests deeper than 32"),
    ([GOOD[0], b'{"a":' * 40 + b"1" + b"}" * 40, GOOD[2]], "limits", "nests deeper"),
    ([GOOD[0], GOOD[1].replace(b'"seq":0', b'"seq":' + b"9" * 5000), GOOD[2]], "limits", "5000 digits"),
    ([GOOD[0], GOOD[1].replace(b'"seq":0', b'"seq":' + b"9" * 20), GOOD[2]], "limits", "20 digits"),
    ([GOOD[0], GOOD[1].replace(b'"pts_s":0.0', b'"pts_s":NaN'), GOOD[2]], "header", "NaN"),
    ([GOOD[0], GOOD[1].replace(b'"pts_s":0.0', b'"pts_s":1e999'), GOOD[2]], "fields", "not finite"),
    (_declare(GOOD, shape=[0, 2**40, 3]), "limits", "exceeds"),  # numpy could not even reshape this
    (_declare(GOOD, shape=[2**20, 2**20, 3]), "limits", "exceeds"),
    (_with_header(GOOD, seq=-1), "header", "seq must be"),
    (_with_header(GOOD, capture_ns=2**63), "header", "capture_ns an int64"),
    (_with_header(GOOD, source="x" * 5000), "header", "source of 5000"),
    (_with_header(AUDIO, fields={"sample_rate_hz": 0, "first_sample": 0}), "fields", r"sample_rate_hz: 0 outside"),
    (_with_header(AUDIO, fields={"sample_rate_hz": 16000, "first_sample": 10**17}), "fields", "first_sample"),
    (_with_header(AUDIO, fields={"sample_rate_hz": True, "first_sample": 0}), "fields", "expected int"),
    (_with_header(SPECTRUM, fields={**_header(SPECTRUM)["fields"], "kind": "evil"}), "fields", "not one of"),
    (_with_header(SPECTRUM, fields={**_header(SPECTRUM)["fields"], "n_fft": 10**9}), "fields", "n_fft"),
    (_declare(GOOD, shape=[1, 1, 3])[:2] + [b"\0" * 3], "schema", r"H, W in \[2, 16384\]"),  # a 1×1 frame
    (_declare(GOOD, shape=[0, 0, 3])[:2] + [b""], "schema", r"H, W in \[2, 16384\]"),  # a 0×0 frame
    (_declare(GOOD, shape=[2, 20000, 3])[:2] + [b"\0" * 120000], "schema", r"H, W in"),
], ids=lambda x: x if isinstance(x, str) else None)
def test_headers_cannot_make_the_decoder_recurse_or_allocate(frames: list[bytes], kind: str, error: str) -> None:
    with pytest.raises(MessageError, match=error) as caught:
        decode(frames)
    assert caught.value.kind == kind


def test_each_type_has_a_byte_ceiling_checked_before_any_array_exists() -> None:
    assert VideoFrame.max_bytes == 64 << 20 and AudioChunk.max_bytes < VideoFrame.max_bytes
    huge = _declare(AUDIO, shape=[AudioChunk.max_bytes // 4 + 1])
    with pytest.raises(MessageError, match="exceeds") as caught:
        decode([*huge[:2], b""])  # the buffer is not even there: refused on the declared shape alone
    assert caught.value.kind == "limits"


def test_a_declared_shape_must_match_the_buffer_exactly() -> None:
    with pytest.raises(MessageError, match="needs 48"):
        decode(_declare(GOOD, shape=[4, 4, 3])[:2] + [GOOD[2] + b"\0" * 48])
    with pytest.raises(MessageError, match="needs 0"):
        decode(_declare(GOOD, shape=[0, 4, 3])[:2] + [GOOD[2]])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("make", [
    lambda x: AudioChunk(samples=np.array([0.1, x, 0.2], np.float32)),
    lambda x: SeparatedAudio(samples=np.array([[0.0, x]], np.float32), track_ids=np.array([1])),
    lambda x: Spectrogram(frames=np.array([[1 + 1j, complex(x, 0)]], np.complex64)),
    lambda x: FeatureMap(features=np.full((2, 2, 2), x, np.float16)),
    lambda x: Embedding(vector=np.array([x, 1.0], np.float32)),
    lambda x: Heatmap(heatmap=np.array([[0.5, x]], np.float32)),
    lambda x: FaceTracks(boxes=np.array([[0, 0, x, 1]], np.float32), track_ids=np.array([1]),
                         lip_features=np.zeros((1, 16), np.float32)),
], ids=["audio", "voices", "spectrum", "features16", "embedding", "heatmap", "boxes"])
def test_non_finite_values_are_refused_on_decode(make, bad: float) -> None:
    """The stated policy (messages.py): reject, never repair. Encoding does not check values (the
    sender's hot path); the receiver refuses the message and counts it."""
    frames = wire(make(bad))
    with pytest.raises(MessageError, match="NaN or infinity") as caught:
        decode(frames)
    assert caught.value.kind == "non-finite"


def test_audio_beyond_its_range_is_refused_and_large_finite_features_are_not() -> None:
    with pytest.raises(MessageError, match="beyond 1000") as caught:
        decode(wire(AudioChunk(samples=np.array([0.0, 5e3], np.float32))))
    assert caught.value.kind == "out of range"
    # 1e6 passes the cheap check's fallback (the sum of squares overflows float32 only past 1e19)
    out = decode(wire(FeatureMap(features=np.full((2, 3, 3), 1e6, np.float32))))
    assert out.features.max() == 1e6
    # loud but legal audio: full scale everywhere, 10 s of it
    decode(wire(AudioChunk(samples=np.ones(160_000, np.float32))))


@pytest.mark.parametrize("where", ["_COMPILED_DECODE", "_decode_fast", "_decode_buffer"])
def test_unexpected_exceptions_inside_decode_become_message_errors(monkeypatch, where: str) -> None:
    """Whatever a check misses, decode raises nothing but MessageError (the transport catches only that),
    on the compiled path, the fast one and the careful one."""
    import pipeline.messages as messages

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug in a check")

    if where != "_COMPILED_DECODE":
        monkeypatch.setattr(messages, "_COMPILED_DECODE", None)
    if where == "_decode_buffer":
        monkeypatch.setattr(messages, "_decode_fast", lambda frames: None)
    monkeypatch.setattr(messages, where, broken)
    with pytest.raises(MessageError, match="ZeroDivisionError"):
        decode(GOOD)


def test_every_type_lists_its_limits() -> None:
    from pipeline.messages import describe_messages

    text = "\n".join(describe_messages())
    assert "first_sample   int in [" in text and "kind           str one of ['complex'" in text
    assert "(buffers at most 64 MiB)" in text


def test_a_spectrogram_kind_matches_its_dtype() -> None:
    with pytest.raises(MessageError, match="logmel frames as complex64"):
        encode(Spectrogram(frames=np.zeros((2, 80), np.complex64), kind="logmel"))
    with pytest.raises(MessageError, match="complex frames as float32"):
        encode(Spectrogram(frames=np.zeros((2, 257), np.float32)))


# -- the header template (issue 17) ----------------------------------------------------------------

def _by_structs(msg: Message) -> list:
    from pipeline.messages import _encode_structs
    return _encode_structs(msg)


@pytest.mark.parametrize("msg", [m for m in examples() if not isinstance(m, Heartbeat)], ids=lambda m: m.type_name)
def test_the_template_writes_what_msgspec_writes(msg: Message) -> None:
    from pipeline.messages import _TEMPLATES, _encode_template, _header_template

    template = _encode_template(msg, _header_template(type(msg)))
    assert template is not None, "the hot path declined a plain message"
    assert json.loads(template[1]) == json.loads(_by_structs(msg)[1])
    assert template[0] == type(msg).type_name.encode()
    encode(msg)
    assert _TEMPLATES[type(msg)], "encode() did not keep the type's template"


@settings(max_examples=200, deadline=None, derandomize=True)
@given(source=st.text(max_size=40), pts=st.floats(allow_nan=False, allow_infinity=False) | st.integers(-2**53, 2**53),
       index=st.integers(0, 2**40), seq=st.integers(0, 2**63 - 1), capture=st.integers(-2**63, 2**63 - 1),
       reason=st.text(max_size=20))
def test_any_value_the_template_writes_reads_back_as_msgspec_writes_it(source, pts, index, seq, capture, reason) -> None:
    """Floats, strings with quotes, control characters or any script, and integers at the int64 edges: the
    template's JSON parses to the same header as msgspec's, and decodes to the same message."""
    for msg in (VideoFrame(image=np.zeros((2, 3, 3), np.uint8), frame_index=index, pts_s=pts, source=source,
                           seq=seq, capture_ns=capture),
                EndOfStream(reason=reason, source=source, seq=seq, capture_ns=capture)):
        ours, theirs = encode(msg), _by_structs(msg)
        assert json.loads(ours[1]) == json.loads(theirs[1])
        read = []
        for frames in (ours, theirs):  # both read back as the message, or both refused alike
            try:
                read.append(decode([*frames[:2], *(f.tobytes() for f in frames[2:])]))
            except MessageError as exc:
                read.append(str(exc))
        if isinstance(read[1], Message):
            assert_same(read[0], msg)
            assert_same(read[1], msg)
        else:
            assert read[0] == read[1]


@pytest.mark.parametrize("change, error", [
    ({"frame_index": np.int64(3)}, "not encodable"),   # a numpy scalar: JSON has no such type
    ({"frame_index": 2.5}, None),                        # msgspec writes it; the decoder then refuses it
    ({"pts_s": float("nan")}, None),                     # written as null, refused when read
    ({"image": np.zeros((2, 3, 3), np.float32)}, "dtype float32"),
    ({"image": np.zeros((2, 3, 3), ">u2")}, "dtype uint16"),
    ({"source": 7}, None),
])
def test_what_the_template_declines_goes_the_careful_way(change, error) -> None:
    """The template writes only values of the exact kind it spells; anything else is encoded (or refused
    with a reason) exactly as before it existed."""
    from pipeline.messages import _encode_template, _header_template

    msg = VideoFrame(image=np.zeros((2, 3, 3), np.uint8))
    for name, value in change.items():
        setattr(msg, name, value)
    assert _encode_template(msg, _header_template(VideoFrame)) is None
    if error:
        with pytest.raises(MessageError, match=error):
            encode(msg)
        return
    try:
        expected = _by_structs(msg)
    except MessageError as exc:
        with pytest.raises(MessageError, match=str(exc)[:30]):
            encode(msg)
        return
    assert encode(msg)[1] == expected[1]
    with pytest.raises(MessageError):
        decode([*expected[:2], *(f.tobytes() for f in expected[2:])])
