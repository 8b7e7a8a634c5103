"""The speaker sink: one voice (or, before any voice, the mixture) through the sound card."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from media.sinks.sink import MIXTURE, Sink, seconds, voice_track

log = logging.getLogger("earshot.sinks.speaker")


class SpeakerSink(Sink):
    """Plays voice ``play_track``, or with -1 the loudest voice of each block, and the mixture
    as long as no voice has come. A block without the chosen voice plays as silence, so the
    speakers keep time."""

    name = "speaker"

    def __init__(self, device: str | int | None = None, sample_rate_hz: int = 16000, play_track: int = -1) -> None:
        if isinstance(device, str) and device.isdigit():
            device = int(device)
        self.device, self.sample_rate_hz, self.play_track = device or None, sample_rate_hz, play_track
        self.output: Any = None
        self.voices_seen = False
        self.samples_played = 0

    def open(self) -> bool:
        try:
            from media.audio_device import AudioOutput
        except ImportError as exc:
            log.warning("audio out unavailable (%s); continuing without it", exc)
            return False
        self.output = AudioOutput(device=self.device, sample_rate_hz=self.sample_rate_hz)
        return True

    def audio(self, tracks: Mapping[str, np.ndarray], first_sample: int) -> None:
        voices = {track: s for track, s in tracks.items() if track != MIXTURE}
        self.voices_seen = self.voices_seen or bool(voices)
        if MIXTURE in tracks:
            if self.play_track == -1 and not self.voices_seen:
                self._play(tracks[MIXTURE])
            return
        if self.play_track != -1:
            chosen = voices.get(voice_track(self.play_track))
        else:
            chosen = max(voices.values(), key=lambda s: float(np.mean(np.square(s))) if s.size else 0.0,
                         default=None)
        n = max((s.size for s in voices.values()), default=0)
        self._play(chosen if chosen is not None else np.zeros(n, np.float32))

    def _play(self, samples: np.ndarray) -> None:
        self.output.write(samples)
        self.samples_played += samples.size

    def close(self) -> list:
        if self.output is not None:
            self.output.close()
            self.output = None
        return []

    def stats(self) -> dict[str, float]:
        out = {"audio_s_played": seconds(self.samples_played, self.sample_rate_hz)}
        for name in ("overruns", "underruns"):  # from the device, where it counts them
            out[name] = getattr(self.output, name, 0)
        return out
