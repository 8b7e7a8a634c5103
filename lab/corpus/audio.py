"""Small audio helpers the generator needs: resampling, loudness, envelopes.

Resampling goes through PyAV (libswresample) because it is already a dependency and is exact
and deterministic; scipy is not needed for anything else.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE_HZ = 16000
FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE_HZ // FPS  # 640


def resample(x: np.ndarray, from_hz: int, to_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Resample mono float32 audio with libswresample (via PyAV)."""
    x = np.asarray(x, np.float32).reshape(-1)
    if from_hz == to_hz or x.size == 0:
        return x.copy()
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=to_hz)
    frame = av.AudioFrame.from_ndarray(x[None, :], format="flt", layout="mono")
    frame.sample_rate = from_hz
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    y = np.concatenate(out) if out else np.zeros(0, np.float32)
    return y.astype(np.float32)


def active_rms(x: np.ndarray, frame: int = 400, floor_db: float = -40.0) -> float:
    """RMS over the frames within ``floor_db`` of the loudest one (speech pauses do not count)."""
    n = len(x) // frame
    if n == 0:
        return float(np.sqrt(np.mean(x**2) + 1e-12))
    e = np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12
    db = 10 * np.log10(e)
    return float(np.sqrt(np.mean(e[db > db.max() + floor_db])))


def normalise_loudness(x: np.ndarray, target_dbfs: float = -25.0) -> np.ndarray:
    """Scale so the active-speech RMS is ``target_dbfs`` (a cheap stand-in for LUFS on speech)."""
    rms = active_rms(x)
    if rms < 1e-6:
        return x.astype(np.float32)
    return (x * (10 ** (target_dbfs / 20) / rms)).astype(np.float32)


def frame_energy_db(x: np.ndarray, hop: int = SAMPLES_PER_FRAME, win: int = 2 * SAMPLES_PER_FRAME,
                    offset: int = 0) -> np.ndarray:
    """Per-video-frame energy (dB) of windows centred on ``t * hop + offset``."""
    n_frames = int(np.ceil(len(x) / hop))
    pad = np.pad(x.astype(np.float32), (win, win + hop))
    idx = np.arange(n_frames) * hop + offset + win - win // 2
    idx = np.clip(idx, 0, len(pad) - win)
    windows = np.lib.stride_tricks.sliding_window_view(pad, win)[idx]
    return 10 * np.log10(np.mean(windows**2, axis=1) + 1e-10)


def envelope(x: np.ndarray) -> np.ndarray:
    """25 fps energy envelope in dB, the reference used to check lip-speech correlation."""
    return frame_energy_db(x)


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Scale ``noise`` so that signal/noise power is ``snr_db``; returns the scaled noise."""
    ps = float(np.mean(signal**2)) + 1e-12
    pn = float(np.mean(noise**2)) + 1e-12
    return (noise * np.sqrt(ps / (pn * 10 ** (snr_db / 10)))).astype(np.float32)
