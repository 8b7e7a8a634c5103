"""The MP4 sink: the drawn video, the mixture and one track per isolated voice in one file."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from media.sinks.sink import MIXTURE, DrawnFrame, Sink, seconds

log = logging.getLogger("earshot.sinks.mp4")


class Mp4Sink(Sink):
    """Opens the file on the first frame (only then is the size known); audio that comes
    earlier waits, up to ``pending_s`` of it per track. Track 0 is the mixture; voices take
    tracks 1..``voice_tracks`` in order of first appearance, the rest are counted, not written."""

    name = "mp4"

    def __init__(self, path: str | Path, fps: float, sample_rate_hz: int, voice_tracks: int,
                 pending_s: float = 10.0) -> None:
        self.path = Path(path)
        self.fps, self.sample_rate_hz, self.voice_tracks = fps, sample_rate_hz, voice_tracks
        self.max_pending = int(pending_s * sample_rate_hz * 3)  # samples: the mixture and two voices
        self.writer: Any = None
        self.closed = False
        self.pending: list[tuple[Mapping[str, np.ndarray], int]] = []
        self.index_of: dict[str, int] = {MIXTURE: 0}  # track → audio stream in the file
        self.counts = {"audio_dropped_before_video": 0, "voices_not_in_mp4": 0}

    def video(self, frame: DrawnFrame) -> None:
        if self.writer is None:
            from media.writers import Mp4Writer

            height, width = frame.image.shape[:2]
            self.writer = Mp4Writer(self.path, width, height, self.fps, self.sample_rate_hz,
                                    audio_tracks=1 + self.voice_tracks)
            for tracks, first_sample in self.pending:
                self.audio(tracks, first_sample)
            self.pending.clear()
        self.writer.write_frame(frame.image, time_s=frame.time_s)

    def audio(self, tracks: Mapping[str, np.ndarray], first_sample: int) -> None:
        if self.writer is None:
            self.pending.append((tracks, first_sample))
            while sum(s.size for block, _ in self.pending for s in block.values()) > self.max_pending:
                self.pending.pop(0)
                self.counts["audio_dropped_before_video"] += 1
            return
        for track, samples in tracks.items():
            index = self.index_of.setdefault(track, len(self.index_of))
            if index <= self.voice_tracks:
                self.writer.write_audio(samples, index, first_sample)
            else:
                self.counts["voices_not_in_mp4"] += 1

    def close(self) -> list[Path]:
        if self.closed:
            return []
        self.closed = True
        if self.writer is not None:
            self.writer.close()
            log.info("wrote %s (%d frames)", self.path, self.writer.frames_written)
        elif self.pending:
            log.warning("no video frame arrived: %s not written", self.path)
            self.pending.clear()
        return [self.path] if self.writer is not None and self.path.exists() else []

    def stats(self) -> dict[str, float]:
        out: dict[str, float] = {"frames_written": self.writer.frames_written if self.writer else 0, **self.counts}
        for track, index in self.index_of.items():
            if self.writer is not None and index <= self.voice_tracks:
                out[f"audio_s_written.{track}"] = seconds(self.writer.audio_samples_from_input(index),
                                                          self.sample_rate_hz)
        return out
