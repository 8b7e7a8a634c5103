"""Small media files that tests make for themselves (nothing to ship, nothing to download)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def video_only_clip(path: Path, frames: int = 5) -> Path:
    """A tiny H.264 MP4 with a picture and no sound: what a microphone cannot read."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            image = np.full((48, 64, 3), 40 * i % 256, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        container.mux(stream.encode())
    return path
