"""The one in-memory form every generated clip takes, and its JSON annotation.

A clip is what the exporters write and what the streaming dataset yields, so tests, training and
demos all see the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lab.corpus.audio import FPS, SAMPLE_RATE_HZ


@dataclass
class Clip:
    """Frames, audio and ground truth of one generated clip.

    frames: (T, H, W, 3) uint8 BGR at 25 fps. mixture: (N,) float32 at 16 kHz, exactly
    ``sources.sum(0) + noise``. sources: (K, N) one row per object (a face's clean speech, an
    instrument's sound; zeros for a silent object). boxes: (T, K, 4) float32 xyxy pixels of each
    object in each frame. sounding: (K,) whether object k makes sound. masks: optional (T, H, W)
    uint8, 1 where a sounding object is drawn (localization ground-truth map).
    """

    kind: str
    frames: np.ndarray
    mixture: np.ndarray
    sources: np.ndarray
    noise: np.ndarray
    boxes: np.ndarray
    sounding: np.ndarray
    classes: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    masks: np.ndarray | None = None
    mouth: np.ndarray | None = None  # (T, K, 2) opening/width the renderer used (checks only: not a model input)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def duration_s(self) -> float:
        return len(self.mixture) / SAMPLE_RATE_HZ

    def annotation(self) -> dict[str, Any]:
        """JSON-ready ground truth (boxes rounded to 0.01 px)."""
        return {
            "kind": self.kind,
            "fps": FPS,
            "sample_rate_hz": SAMPLE_RATE_HZ,
            "num_frames": self.num_frames,
            "width": int(self.frames.shape[2]),
            "height": int(self.frames.shape[1]),
            "num_samples": int(len(self.mixture)),
            "objects": [
                {
                    "index": k,
                    "class": self.classes[k],
                    "sounding": bool(self.sounding[k]),
                    "boxes_xyxy": np.round(self.boxes[:, k], 2).tolist(),
                }
                for k in range(len(self.classes))
            ],
            "meta": self.meta,
        }
