"""The localization nodes in a real multi-process graph: a heatmap for every encoded frame.

camera stand-in (ticker, 25 fps) → visual_encoder ─┐
microphone stand-in (audio_ticker, real time) → stft → audio_encoder ─┴→ fusion → recorder
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from engines.models import get
from pipeline.messages import Heatmap
from pipeline.node import Input, Node
from tests.graphs import Background, write_graph
from tests.runtime_nodes import REGISTRY, read_records

pytestmark = pytest.mark.skipif(
    not all(get(f"localizer_{p}").onnx_path.exists() for p in ("visual", "audio", "fusion")),
    reason="shipped localizer ONNX missing: python launch.py export",
)


class HeatmapRecorder(Node):
    """Writes each heatmap's frame index, shape and range to ``path`` as JSON lines."""

    @dataclass
    class Params:
        path: str = ""

    inputs = {"heatmap": Input(Heatmap, policy="queue", size=64)}

    def open(self) -> None:
        self.file = open(self.params.path, "a", buffering=1)

    def on_message(self, port: str, msg: Heatmap) -> None:
        self.file.write(json.dumps({"index": msg.frame_index, "shape": list(msg.heatmap.shape),
                                    "min": float(msg.heatmap.min()), "max": float(msg.heatmap.max())}) + "\n")

    def close(self) -> None:
        self.file.close()


def test_graph_emits_a_heatmap_per_frame(tmp_path):
    from pipeline.graph import load_graph

    from nodes import NODE_TYPES

    registry = {**REGISTRY, **NODE_TYPES, "heatmap_recorder": "tests.test_localization_graph:HeatmapRecorder"}
    rec = tmp_path / "heatmaps.jsonl"
    frames = 20
    path = write_graph(tmp_path, {
        "camera": {"type": "ticker", "params": {"rate_hz": 25.0, "count": frames, "height": 48, "width": 64}},
        "microphone": {"type": "audio_ticker", "params": {"count": 100, "rate_hz": 100.0}},
        "stft": {"type": "stft", "inputs": {"audio": "microphone/audio"}},
        # queue (not latest) so that a loaded CI machine cannot drop frames and the count is exact
        "visual_encoder": {"type": "visual_encoder", "params": {"backend": "onnxruntime"},
                           "inputs": {"video": {"from": "camera/frames", "policy": "queue", "size": 64}}},
        "audio_encoder": {"type": "audio_encoder", "params": {"backend": "onnxruntime"},
                          "inputs": {"logmel": "stft/logmel"}},
        "fusion": {"type": "fusion", "params": {"backend": "onnxruntime"},
                   "inputs": {"features": {"from": "visual_encoder/features", "policy": "queue", "size": 64},
                              "embedding": "audio_encoder/embedding"}},
        "recorder": {"type": "heatmap_recorder", "params": {"path": str(rec)}, "inputs": {"heatmap": "fusion/heatmap"}},
    })
    graph = load_graph(path, registry)
    bg = Background(graph, timeout_s=60)
    with bg:
        bg.thread.join(60)
    assert bg.code == 0, bg.events
    records = read_records(rec)
    assert [r["index"] for r in records] == list(range(frames)), records
    assert all(r["shape"] == [14, 14] and 0 <= r["min"] <= r["max"] <= 1 for r in records)
    assert np.isfinite([r["max"] for r in records]).all()
