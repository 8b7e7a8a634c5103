"""Sound families of the localization classes: real recordings from ../shared/data/sounds (time
split train/eval like the noise) with procedural fallbacks, so scenes also build without data."""

from __future__ import annotations

import numpy as np

from lab.corpus.audio import SAMPLE_RATE_HZ, normalise_loudness
from lab.corpus.noise import pink_noise, recording_part

RECORDINGS = {
    "guitar": ("guitar_16k.wav", "singing_8000.wav"),
    "appliance": ("doing_the_dishes.wav",),
    "bike": ("exercise_bike.wav",),
    "loudspeaker": ("german_speech_8000.wav",),
}


def _crop(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if len(x) <= n:
        return np.pad(np.tile(x, n // max(1, len(x)) + 1)[:n], (0, 0))
    start = int(rng.integers(0, len(x) - n))
    return x[start:start + n].copy()


def pluck(n: int, rng: np.random.Generator) -> np.ndarray:
    """Karplus-Strong plucked notes at random times (a procedural guitar)."""
    out = np.zeros(n, np.float32)
    pos = 0
    while pos < n:
        f0 = 110 * 2 ** (rng.integers(0, 24) / 12)
        period = int(SAMPLE_RATE_HZ / f0)
        length = min(n - pos, int(rng.uniform(0.25, 0.8) * SAMPLE_RATE_HZ))
        buf = rng.uniform(-1, 1, period)
        note = np.empty(length, np.float32)
        for i in range(length):
            note[i] = buf[i % period]
            buf[i % period] = 0.996 * 0.5 * (buf[i % period] + buf[(i + 1) % period])
        out[pos:pos + length] += note
        pos += length
    return out


def tones(n: int, rng: np.random.Generator) -> np.ndarray:
    """Chords with note-by-note envelopes (music from a loudspeaker)."""
    t = np.arange(n) / SAMPLE_RATE_HZ
    out = np.zeros(n, np.float32)
    step = int(rng.uniform(0.2, 0.5) * SAMPLE_RATE_HZ)
    for a in range(0, n, step):
        b = min(n, a + step)
        env = np.exp(-np.linspace(0, 4, b - a))
        for semis in rng.choice([0, 3, 4, 7, 10, 12], size=3, replace=False):
            f = 220 * 2 ** ((semis + rng.integers(-5, 6)) / 12)
            out[a:b] += env * np.sin(2 * np.pi * f * t[a:b])
    return out


def machine(n: int, rng: np.random.Generator, rate_hz: float) -> np.ndarray:
    """Periodically modulated noise (a motor, pedals, a dishwasher's spray)."""
    t = np.arange(n) / SAMPLE_RATE_HZ
    mod = 0.6 + 0.4 * np.sin(2 * np.pi * rate_hz * t + rng.uniform(0, 6.3))
    return (pink_noise(n, rng) * mod).astype(np.float32)


def object_sound(cls: str, split: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of a ``cls`` sound, loudness normalised; real recording if available."""
    names = RECORDINGS.get(cls, ())
    x = None
    if names and rng.random() < 0.7:
        rec = recording_part(names[int(rng.integers(len(names)))], split)
        if rec is not None and len(rec) > 0:
            x = _crop(rec, n, rng)
    if x is None:
        x = {"guitar": pluck, "loudspeaker": tones}.get(cls, lambda m, r: machine(m, r, r.uniform(0.5, 3)))(n, rng)
    # Sources start and stop, so activity (and the object's motion) varies over the clip.
    env = np.repeat(rng.random(int(np.ceil(n / 4000))) < 0.75, 4000)[:n].astype(np.float32)
    env = np.convolve(env, np.ones(400) / 400, mode="same")
    return normalise_loudness(x * env, -25.0)
