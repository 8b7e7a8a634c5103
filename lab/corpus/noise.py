"""Background noise for mixtures: real recordings (split by time between train and eval) or
procedural (pink noise, hum, babble-like modulated noise) when the recordings are absent."""

from __future__ import annotations

import functools

import numpy as np

from lab.corpus.audio import SAMPLE_RATE_HZ, resample
from lab.corpus.data_paths import data_root
from lab.corpus.speech import TRAIN

NOISE_FILES = ("doing_the_dishes.wav", "exercise_bike.wav")
TRAIN_SHARE = 0.7  # first 70 % of each recording for training, the rest for evaluation


@functools.lru_cache(maxsize=8)
def _recording(name: str) -> np.ndarray | None:
    path = data_root() / "sounds" / name
    if not path.is_file():
        return None
    import soundfile as sf

    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return resample(x.mean(axis=1), sr)


def recording_part(name: str, split: str) -> np.ndarray | None:
    """The train or eval part of a recording (time split, so eval noise is unheard in training)."""
    x = _recording(name)
    if x is None:
        return None
    cut = int(len(x) * TRAIN_SHARE)
    return x[:cut] if split == TRAIN else x[cut:]


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    white = rng.normal(0, 1, n)
    spec = np.fft.rfft(white)
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE_HZ)
    spec /= np.sqrt(np.maximum(f, 20.0))
    y = np.fft.irfft(spec, n)
    return (y / (np.std(y) + 1e-9)).astype(np.float32)


def noise_clip(split: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of noise of unit-ish level: a random crop of a real recording, else procedural."""
    choice = int(rng.integers(len(NOISE_FILES) + 2))
    if choice < len(NOISE_FILES):
        x = recording_part(NOISE_FILES[choice], split)
        if x is not None and len(x) > n:
            start = int(rng.integers(0, len(x) - n))
            return x[start:start + n].copy()
    return procedural_noise(n, rng, hum=choice == len(NOISE_FILES))


def procedural_noise(n: int, rng: np.random.Generator, hum: bool | None = None) -> np.ndarray:
    """Mains hum over pink noise, or babble-like modulated pink noise (``hum=None``: either)."""
    if hum is None:
        hum = bool(rng.random() < 0.5)
    if hum:  # mains hum + harmonics over pink noise (fans, appliances)
        t = np.arange(n) / SAMPLE_RATE_HZ
        f0 = rng.choice([50.0, 60.0])
        tone = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6.3)) / h for h in range(1, 6))
        return (tone + 0.5 * pink_noise(n, rng)).astype(np.float32)
    env = np.interp(np.arange(n), np.linspace(0, n, 20), rng.uniform(0.3, 1.0, 20))
    return (pink_noise(n, rng) * env).astype(np.float32)
