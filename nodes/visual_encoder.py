"""VisualEncoder: each camera frame → the localizer's spatial features (128 × 14 × 14).

The frame is resized to 224² and run together with the frame before it: the network looks at motion
too, because a still picture cannot tell a speaking face from a silent one beside it. Under the
``latest`` policy a slow machine skips frames, and "the frame before" is then the last one this node
saw: motion looks a little larger, which the map tolerates (it still moves in time with the sound).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.loader import load
from engines.localization.localizer_inputs import resize_frame
from pipeline.messages import FeatureMap, VideoFrame
from pipeline.node import Input, Node, Output


def to_input(frame_bgr: np.ndarray) -> np.ndarray:
    """H×W×3 uint8 BGR → (1, 3, 224, 224) float32 0..255, the encoder's input layout."""
    return resize_frame(frame_bgr).transpose(2, 0, 1)[None].astype(np.float32)


class VisualEncoder(Node):
    """Runs the shipped ``localizer_visual`` ONNX graph (engine layer) on every frame it receives."""

    @dataclass
    class Params:
        model: str = "localizer_visual"
        backend: str = "auto"  # "onnxruntime" | "torch" | "tensorrt" | "auto"
        threads: int = 1       # one core: the audio encoder and fusion need the other

    # latest: a stale frame is worthless for a live heatmap, so never queue a backlog
    inputs = {"video": Input(VideoFrame, policy="latest", size=1)}
    outputs = {"features": Output(FeatureMap, doc="float32 (128, 14, 14) per frame")}

    def open(self) -> None:
        self.engine = load(self.params.model, backend=self.params.backend, threads=self.params.threads)
        self.previous: np.ndarray | None = None

    def on_message(self, port: str, frame: VideoFrame) -> None:
        image = to_input(frame.image)
        previous = image if self.previous is None else self.previous  # first frame: no motion yet
        features = self.engine.run({"image": image, "previous": previous})["features"][0]
        self.previous = image
        self.send("features", FeatureMap(features=features, frame_index=frame.frame_index,
                                         capture_ns=frame.capture_ns))

    def close(self) -> None:
        if hasattr(self, "engine"):
            self.engine.close()
