"""The speaker sink: one voice (or, before any voice, the mixture) through the sound card."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from media.sinks.sink import MIXTURE, Sink, VoiceChoice, seconds, voice_track

log = logging.getLogger("earshot.sinks.speaker")


class SpeakerSink(Sink):
    """Plays the voices of the faces chosen in ``choice`` (several: summed), or with none chosen
    voice ``play_track``, or with -1 the loudest voice of each block, and the mixture as long as no
    voice has come. A block without the chosen voice plays as silence, so the speakers keep time.

    When what plays changes (a click in the browser view, a new loudest voice), the old voices fade
    out and the new ones in over ``crossfade_ms``, sample by sample across blocks: a hard switch
    between two waveforms is a step, heard as a click. Each voice has a gain that moves towards 1
    (playing) or 0 by ``1 / crossfade samples`` per sample, so a change in the middle of a fade goes
    on from where the gains are. The mix is made in buffers kept between blocks (grown only when a
    longer block comes), so a block allocates no audio memory; what :meth:`_play` is given is only
    valid during the call (the outputs copy it)."""

    name = "speaker"

    def __init__(self, device: str | int | None = None, sample_rate_hz: int = 16000, play_track: int = -1,
                 choice: VoiceChoice | None = None, crossfade_ms: float = 15.0) -> None:
        if isinstance(device, str) and device.isdigit():
            device = int(device)
        if crossfade_ms < 0:
            raise ValueError(f"crossfade_ms must be ≥ 0, got {crossfade_ms}")
        self.device, self.sample_rate_hz, self.play_track = device or None, sample_rate_hz, play_track
        self.choice = choice
        self.fade_samples = max(1, round(crossfade_ms * sample_rate_hz / 1000))
        self.output: Any = None
        self.voices_seen = False
        self.samples_played = 0
        self.voice_switches = 0                     # changes of what plays, each one crossfaded
        self._gains: dict[str, float] = {}          # track → gain at the end of the last block (0: absent)
        self._playing: frozenset[str] | None = None  # the tracks wanted in the last block; None: no voice block yet
        self._mix = self._gain = self._ramp = np.zeros(0, np.float32)

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
        self._play(self._mixed(voices, self._wanted(voices), max((s.size for s in voices.values()), default=0)))

    def _wanted(self, voices: Mapping[str, np.ndarray]) -> frozenset[str]:
        """The tracks to play in this block: the chosen faces', else ``play_track``, else the loudest."""
        chosen = self.choice.tracks if self.choice is not None else frozenset()
        if chosen:
            return frozenset(voice_track(i) for i in chosen)
        if self.play_track != -1:
            return frozenset((voice_track(self.play_track),))
        loudest = max(voices, key=lambda track: float(np.dot(voices[track], voices[track])), default=None)
        return frozenset(() if loudest is None else (loudest,))

    def _mixed(self, voices: Mapping[str, np.ndarray], wanted: frozenset[str], n: int) -> np.ndarray:
        """Σ gain·voice over this block, the gains ramping towards ``wanted`` (see the class)."""
        if self._playing is None:  # the first voices: nothing to fade from
            self._gains = dict.fromkeys(wanted, 1.0)
        elif wanted != self._playing:
            self.voice_switches += 1
        self._playing = wanted
        if n > self._mix.size:
            self._mix, self._gain = np.zeros(n, np.float32), np.zeros(n, np.float32)
            self._ramp = (np.arange(1, n + 1) / self.fade_samples).astype(np.float32)
        out = self._mix[:n]
        out.fill(0.0)
        if n == 0:
            return out
        for track in wanted | self._gains.keys():
            start, target = self._gains.get(track, 0.0), 1.0 if track in wanted else 0.0
            x = voices.get(track)
            m = 0 if x is None else min(x.size, n)
            if start == target:  # steady: exactly the voice (or nothing)
                if target and m:
                    out[:m] += x[:m]
                continue
            gain = self._gain[:n]
            np.multiply(self._ramp[:n], 1.0 if target > start else -1.0, out=gain)
            gain += start
            np.clip(gain, 0.0, 1.0, out=gain)
            end = float(gain[-1])
            if m:
                np.multiply(gain[:m], x[:m], out=gain[:m])
                out[:m] += gain[:m]
            if end:
                self._gains[track] = end
            else:
                self._gains.pop(track, None)
        return out

    def _play(self, samples: np.ndarray) -> None:
        self.output.write(samples)
        self.samples_played += samples.size

    def close(self) -> list:
        if self.output is not None:
            self.output.close()
            self.output = None
        return []

    def stats(self) -> dict[str, float]:
        out = {"audio_s_played": seconds(self.samples_played, self.sample_rate_hz),
               "voice_switches": self.voice_switches}
        for name in ("overruns", "underruns"):  # from the device, where it counts them
            out[name] = getattr(self.output, name, 0)
        return out
