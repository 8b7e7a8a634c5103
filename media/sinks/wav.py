"""The WAV sink: one WAV per isolated voice, and ``voices.json`` saying which face each is.

``voices.json`` (issue #16) maps each voice to its face's box track, so a user can tell
which WAV belongs to which face::

    {"sample_rate_hz": 16000, "frame_width": 640, "frame_height": 480,
     "columns": ["time_s", "x", "y", "w", "h"],
     "voices": {"7": {"wav": "voice_7.wav", "boxes": [[0.04, 120.0, 80.5, 96.0, 110.0], ...]}}}

``time_s`` is on the WAVs' own timeline (sample / sample_rate_hz: the same clock the voices
were placed by); boxes are in pixels of a frame_width × frame_height frame. A voice whose
face was never seen (the renderer's ``faces`` input unwired) has an empty box list.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from media.sinks.sink import MIXTURE, Sink, seconds, voice_track

log = logging.getLogger("earshot.sinks.wav")

SIDECAR = "voices.json"


class WavSink(Sink):
    """``<folder>/voice_<track id>.wav`` per voice (the mixture is not written) + the sidecar."""

    name = "wav"

    def __init__(self, folder: str | Path, sample_rate_hz: int) -> None:
        self.folder = Path(folder)
        self.sample_rate_hz = sample_rate_hz
        self.wavs: dict[str, Any] = {}  # track → WavWriter
        self.boxes: dict[str, list[list[float | None]]] = {}  # track → [[time_s, x, y, w, h], ...]
        self.frame_size = (0, 0)
        self.closed = False

    def audio(self, tracks: Mapping[str, np.ndarray], first_sample: int) -> None:
        for track, samples in tracks.items():
            if track == MIXTURE:
                continue
            if track not in self.wavs:
                from media.writers import WavWriter

                self.wavs[track] = WavWriter(self.folder / f"{track}.wav", self.sample_rate_hz)
            self.wavs[track].write(samples, first_sample)

    def faces(self, time_s: float | None, track_ids: Sequence[int], boxes_xyxy: np.ndarray,
              frame_size: tuple[int, int]) -> None:
        self.frame_size = frame_size
        t = None if time_s is None else round(time_s, 3)
        for track_id, (x1, y1, x2, y2) in zip(track_ids, np.asarray(boxes_xyxy, np.float64).tolist()):
            self.boxes.setdefault(voice_track(track_id), []).append(
                [t, round(x1, 1), round(y1, 1), round(x2 - x1, 1), round(y2 - y1, 1)])

    def close(self) -> list[Path]:
        if self.closed:
            return []
        self.closed = True
        for wav in self.wavs.values():
            wav.close()
            log.info("wrote %s", wav.path)
        sidecar = self.folder / SIDECAR
        self.folder.mkdir(parents=True, exist_ok=True)
        sidecar.write_text(self.sidecar_json())
        return [p for p in [*(w.path for w in self.wavs.values()), sidecar] if p.exists()]

    def sidecar(self) -> dict[str, Any]:
        voices = {track.removeprefix("voice_"): {"wav": wav.path.name, "boxes": self.boxes.get(track, [])}
                  for track, wav in sorted(self.wavs.items(), key=lambda item: int(item[0].removeprefix("voice_")))}
        return {"sample_rate_hz": self.sample_rate_hz, "frame_width": self.frame_size[0],
                "frame_height": self.frame_size[1], "columns": ["time_s", "x", "y", "w", "h"], "voices": voices}

    def sidecar_json(self) -> str:
        """The sidecar as JSON with one line per voice: readable in an editor, not 7 lines per box."""
        doc = self.sidecar()
        voices = ",\n  ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in doc.pop("voices").items())
        return json.dumps(doc)[:-1] + ',\n "voices": {\n  ' + voices + "\n }\n}\n"

    def stats(self) -> dict[str, float]:
        return {f"audio_s_written.{track}": seconds(wav.samples_from_input, self.sample_rate_hz)
                for track, wav in self.wavs.items()}
