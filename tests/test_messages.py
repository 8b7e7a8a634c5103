"""Wire format: every message type round-trips; every malformed frame is refused clearly."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pipeline.messages import (AudioChunk, Control, Embedding, EndOfStream, FaceTracks, FeatureMap, Heartbeat,
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


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(dtype=st.sampled_from([np.float16, np.float32, np.float64]),
                  shape=hnp.array_shapes(min_dims=3, max_dims=3, min_side=0, max_side=9)))
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
