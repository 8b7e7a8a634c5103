"""The frame record: one JSON line per rendered frame, what a program reads instead of the video.

Beside the MP4 by default (``out/demo.mp4`` → ``out/demo.jsonl``), one line per frame the
renderer drew, in the order drawn::

    {"frame": 12, "time_s": 0.48, "peak": {"x": 402, "y": 161, "value": 0.43},
     "faces": [{"id": 7, "box": [380.0, 120.5, 450.0, 210.0]}], "speaking": 7, "speaking_score": 0.61}

``time_s`` is on the files' timeline (the MP4's clock; null for an unstamped frame). ``peak`` is
where the sound comes from, in pixels of the drawn frame, and the map's value there (null: no fresh
heatmap, or no finite value in it). ``faces`` are the fresh face boxes, in the same pixels.
``speaking`` is the track the heatmap names as the speaking face (null: nobody, or no fresh
heatmap), ``speaking_score`` its lip-sync score. Only what the frame shows is recorded: a stale
heatmap or stale faces (older than the renderer's ``stale_ms``) count as absent.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from media.sinks.sink import DrawnFrame, Sink

log = logging.getLogger("earshot.sinks.frame_record")


def peak_xy(heatmap: np.ndarray, width: int, height: int) -> tuple[int, int, float] | None:
    """(x, y, value) of a map's maximum after bicubic upsampling to a ``width`` × ``height`` frame:
    the same rule the localizer's evaluation scores by (lab/localization/localizer_real_video.py),
    so a record's peak is comparable with its figures. None when the map has no finite value."""
    heat = np.asarray(heatmap, np.float32)
    finite = np.isfinite(heat)
    if not finite.any():
        return None
    heat = np.where(finite, heat, heat[finite].min())  # a NaN cell must not win argmax or spread in the resize
    up = cv2.resize(heat, (width, height), interpolation=cv2.INTER_CUBIC)
    y, x = np.unravel_index(int(np.argmax(up)), up.shape)
    # bicubic overshoots a sharp peak by a few %: the value reported stays within the map's own range
    return int(x), int(y), float(np.clip(up[y, x], heat.min(), heat.max()))


def _number(value: float | None, digits: int) -> float | None:
    """A JSON-safe number: NaN and infinities become null (json would write the invalid ``NaN``)."""
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def frame_line(frame: DrawnFrame) -> dict[str, Any]:
    """One frame's record (see the module doc)."""
    height, width = frame.image.shape[:2]
    peak = peak_xy(frame.heatmap, width, height) if frame.heatmap is not None and frame.heatmap.size else None
    return {
        "frame": int(frame.index),
        "time_s": _number(frame.time_s, 3),
        "peak": None if peak is None or _number(peak[2], 4) is None else
        {"x": peak[0], "y": peak[1], "value": _number(peak[2], 4)},
        "faces": [{"id": int(i), "box": [_number(v, 1) for v in box]} for i, box in frame.faces.items()],
        "speaking": None if frame.speaking is None else int(frame.speaking),
        "speaking_score": None if frame.speaking is None else _number(frame.speaking_score, 4),
    }


class FrameRecordSink(Sink):
    """Writes :func:`frame_line` of every frame to ``path`` (created, with its folder, on the first
    frame, so a run that draws nothing leaves no empty file).

    The file is line-buffered: each line reaches the OS as it is written, so a crashed renderer
    loses no line already written (well within "at most the last second"); at 30 fps that is 30
    small writes a second, microseconds each."""

    name = "record"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.file: IO[str] | None = None
        self.frames_written = 0
        self.closed = False

    def video(self, frame: DrawnFrame) -> None:
        if self.closed:
            return
        if self.file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "w", buffering=1, encoding="utf-8")  # noqa: SIM115 - closed in close()
        # allow_nan=False: should a non-finite number slip past frame_line, fail loudly, never write bad JSON
        self.file.write(json.dumps(frame_line(frame), allow_nan=False, separators=(",", ":")) + "\n")
        self.frames_written += 1

    def close(self) -> list[Path]:
        if self.closed:
            return []
        self.closed = True
        if self.file is None:
            return []
        self.file.close()
        log.info("wrote %s (%d frames)", self.path, self.frames_written)
        return [self.path] if self.path.exists() else []

    def stats(self) -> dict[str, float]:
        return {"frames_written": self.frames_written}
