"""The localization nodes in-process (Harness): a heatmap per frame, aligned by capture time."""

from __future__ import annotations

import numpy as np
import pytest

from engines.models import get
from pipeline.harness import Harness
from pipeline.messages import Embedding, FeatureMap, Spectrogram, VideoFrame

pytestmark = pytest.mark.skipif(
    not all(get(f"localizer_{p}").onnx_path.exists() for p in ("visual", "audio", "fusion")),
    reason="shipped localizer ONNX missing: python launch.py export",
)

MS = 1_000_000


def _frame(i: int, rng: np.random.Generator) -> VideoFrame:
    image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    return VideoFrame(image=image, frame_index=i, capture_ns=1_000 * MS + i * 40 * MS)


def _logmel(first_frame: int, n: int, capture_ns: int) -> Spectrogram:
    frames = np.random.default_rng(first_frame).normal(-8, 3, (n, 80)).astype(np.float32)
    return Spectrogram(frames=frames, kind="logmel", first_frame=first_frame, capture_ns=capture_ns)


def test_visual_encoder_one_feature_map_per_frame():
    from nodes.visual_encoder import VisualEncoder

    rng = np.random.default_rng(0)
    with Harness(VisualEncoder, {"backend": "onnxruntime"}) as h:
        for i in range(3):
            h.feed("video", _frame(i, rng))
    maps = h.outputs["features"]
    assert [m.frame_index for m in maps] == [0, 1, 2]
    assert all(m.features.shape == (128, 14, 14) and m.features.dtype == np.float32 for m in maps)
    assert maps[1].capture_ns == 1_000 * MS + 40 * MS


def test_audio_encoder_emits_every_hop_and_refuses_complex_frames():
    from nodes.audio_encoder import AudioEncoder

    with Harness(AudioEncoder, {"backend": "onnxruntime", "hop_frames": 4}) as h:
        for k in range(6):  # 2 frames per message: one embedding every other message
            h.feed("logmel", _logmel(2 * k, 2, capture_ns=(k + 1) * 20 * MS))
        bad = Spectrogram(frames=np.zeros((2, 257), np.complex64), kind="complex")
        with pytest.raises(Exception, match="log-mel"):
            h.node.on_message("logmel", bad)
    out = h.outputs["embedding"]
    assert len(out) == 3 and all(e.vector.shape == (128,) for e in out)
    assert [e.capture_ns for e in out] == [40 * MS, 80 * MS, 120 * MS]


def test_fusion_pairs_by_capture_time_and_emits_a_heatmap_per_frame():
    from nodes.fusion import Fusion

    rng = np.random.default_rng(1)
    features = [FeatureMap(features=rng.normal(size=(128, 14, 14)).astype(np.float32), frame_index=i,
                           capture_ns=i * 40 * MS) for i in range(4)]
    with Harness(Fusion, {"backend": "onnxruntime", "max_wait_ms": 1e9}) as h:
        for f in features:
            h.feed("features", f)
        assert h.outputs["heatmap"] == []  # no audio yet: frames wait for theirs
        for k in range(3):  # embeddings for windows ending at 0, 40, 80 ms
            h.feed("embedding", Embedding(vector=rng.normal(size=128).astype(np.float32), capture_ns=k * 40 * MS))
        assert [m.frame_index for m in h.outputs["heatmap"]] == [0, 1, 2]
        h.end()  # frame 3 has no later audio: it takes the newest there is
    heatmaps = h.outputs["heatmap"]
    assert [m.frame_index for m in heatmaps] == [0, 1, 2, 3]
    assert h.node.counters.get("unmatched_frames") == 1
    for m in heatmaps:
        assert m.heatmap.shape == (14, 14) and 0 <= m.heatmap.min() and m.heatmap.max() <= 1


def test_encoders_into_fusion_give_one_heatmap_per_video_frame():
    """Visual and audio encoders chained into fusion in-process, as the graph wires them."""
    from nodes.audio_encoder import AudioEncoder
    from nodes.fusion import Fusion
    from nodes.visual_encoder import VisualEncoder

    rng = np.random.default_rng(2)
    params = {"backend": "onnxruntime"}
    with Harness(VisualEncoder, params) as v, Harness(AudioEncoder, params) as a, Harness(Fusion, params) as f:
        for i in range(5):
            frame = _frame(i, rng)
            v.feed("video", frame)
            a.feed("logmel", _logmel(4 * i, 4, capture_ns=frame.capture_ns + 40 * MS))
        for msg in a.outputs["embedding"]:
            f.feed("embedding", msg)
        for msg in v.outputs["features"]:
            f.feed("features", msg)
        f.end()
    assert [m.frame_index for m in f.outputs["heatmap"]] == list(range(5))
    assert f.node.counters.get("unmatched_frames", 0) == 0
