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

A renderer restarted within a run (a crash, a kill -9) goes on in the same file: a marker beside it,
``.NAME.run``, holds the run's id (``EARSHOT_RUN_ID``, set by the node runner) while the run writes it,
so a new process of the same run appends and a new run starts the file anew.
"""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from media.sinks.sink import DrawnFrame, Sink

log = logging.getLogger("earshot.sinks.frame_record")

RUN_ID_ENV = "EARSHOT_RUN_ID"


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

    def __init__(self, path: str | Path, run_id: str | None = None) -> None:
        self.path = Path(path)
        self.marker = self.path.parent / f".{self.path.name}.run"
        self.run_id = run_id or os.environ.get(RUN_ID_ENV) or uuid.uuid4().hex
        self.file: IO[str] | None = None
        self.frames_written = 0
        self.frames_before = 0  # written by earlier processes of this run
        self.closed = False

    def _open(self) -> IO[str]:
        """This run's file: appended to when an earlier process of the run wrote it, else started anew."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            ours = self.marker.read_text() == self.run_id and self.path.exists()
        except OSError:
            ours = False
        if ours:
            with open(self.path, "rb") as f:
                self.frames_before = sum(1 for _ in f)
            log.info("restarted: going on with %s after its %d frames", self.path, self.frames_before)
        else:
            self.marker.write_text(self.run_id)
        return open(self.path, "a" if ours else "w", buffering=1, encoding="utf-8")  # noqa: SIM115 - closed in close()

    def video(self, frame: DrawnFrame) -> None:
        if self.closed:
            return
        if self.file is None:
            self.file = self._open()
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
        self.marker.unlink(missing_ok=True)  # the run is over: its file is whole
        log.info("wrote %s (%d frames)", self.path, self.frames_before + self.frames_written)
        return [self.path] if self.path.exists() else []

    def stats(self) -> dict[str, float]:
        return {"frames_written": self.frames_written}
