"""Mouth motion driven by a speaker's own speech, the way a real face moves.

Opening follows the short-time energy (jaw drops on loud vowels, closes in pauses and on
plosives); width follows a spectral cue (share of energy above 1.5 kHz: spread lips for /i/, /s/;
rounded for /u/, /o/). A per-clip lag within +-40 ms (audio-visual offset of real recordings),
a per-clip gain/gamma (people articulate differently) and frame noise make it as imperfect as a
real face. Nothing else goes in: the trajectory is a function of this speaker's waveform and the
random generator only, so it carries no identity or colour code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lab.corpus.audio import SAMPLE_RATE_HZ, SAMPLES_PER_FRAME, frame_energy_db

MAX_LAG_MS = 40.0


@dataclass(frozen=True)
class MouthTrack:
    """Per-frame mouth parameters at 25 fps, each in [0, 1], and the lag (ms) that was used."""

    opening: np.ndarray
    width: np.ndarray
    lag_ms: float


def mouth_track(speech: np.ndarray, rng: np.random.Generator, n_frames: int | None = None,
                noise: float = 0.05, lag_ms: float | None = None) -> MouthTrack:
    """Mouth trajectory for ``speech`` (16 kHz); positive lag = the mouth moves before the sound."""
    if n_frames is None:
        n_frames = int(np.ceil(len(speech) / SAMPLES_PER_FRAME))
    lag = float(rng.uniform(-MAX_LAG_MS, MAX_LAG_MS)) if lag_ms is None else float(lag_ms)
    offset = int(round(lag * SAMPLE_RATE_HZ / 1000))
    win = 2 * SAMPLES_PER_FRAME
    energy_db = frame_energy_db(speech, offset=offset, win=win)[:n_frames]
    energy_db = np.pad(energy_db, (0, n_frames - len(energy_db)), constant_values=-100.0)
    high_db = frame_energy_db(_highpass(speech), offset=offset, win=win)[:n_frames]
    high_db = np.pad(high_db, (0, n_frames - len(high_db)), constant_values=-100.0)

    # Opening: energy relative to an absolute speech level (sources are loudness normalised to
    # -25 dBFS active RMS); -55 dBFS and below is a closed mouth.
    gamma = rng.uniform(0.8, 1.3)
    gain = rng.uniform(0.8, 1.1)
    opening = np.clip((energy_db + 55.0) / 35.0, 0.0, 1.0) ** gamma * gain
    # Width: spread when high frequencies dominate, rounded when they do not; neutral in silence.
    ratio = np.clip((high_db - energy_db + 12.0) / 12.0, 0.0, 1.0)
    voiced = np.clip((energy_db + 55.0) / 15.0, 0.0, 1.0)
    width = 0.5 + (ratio - 0.5) * voiced

    # Jaw and lips have mass: smooth with a short one-pole filter (attack faster than release).
    opening = _smooth(opening, up=0.75, down=0.55)
    width = _smooth(width, up=0.6, down=0.6)
    opening = np.clip(opening + rng.normal(0, noise, n_frames), 0, 1)
    width = np.clip(width + rng.normal(0, noise, n_frames), 0, 1)
    return MouthTrack(opening.astype(np.float32), width.astype(np.float32), lag)


def silent_track(n_frames: int, rng: np.random.Generator, noise: float = 0.05) -> MouthTrack:
    """A face that does not speak: mouth mostly closed with small idle motion (swallow, smile)."""
    opening = np.clip(np.abs(rng.normal(0, noise, n_frames)), 0, 0.15)
    width = np.clip(0.5 + rng.normal(0, noise, n_frames), 0, 1)
    return MouthTrack(_smooth(opening, 0.5, 0.5).astype(np.float32), width.astype(np.float32), 0.0)


def _smooth(x: np.ndarray, up: float, down: float) -> np.ndarray:
    y = np.empty_like(x)
    prev = x[0] if len(x) else 0.0
    for i, v in enumerate(x):
        a = up if v > prev else down
        prev = a * v + (1 - a) * prev
        y[i] = prev
    return y


def _highpass(x: np.ndarray) -> np.ndarray:
    """Energy above ~1.5 kHz via spectral masking of the whole signal (cheap at clip lengths)."""
    spec = np.fft.rfft(x.astype(np.float32))
    freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE_HZ)
    spec[freqs < 1500] = 0
    return np.fft.irfft(spec, n=len(x)).astype(np.float32)
