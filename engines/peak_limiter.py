"""A streaming peak limiter: an isolated voice never leaves louder than full scale.

Why: the shipped separator's masks carry a make-up gain (×3, `CrnConfig.output_gain`) so a voice keeps its
own loudness, and a ratio mask may exceed 1; on a loud clip a voice then peaks past ±1, and every consumer
(the PCM16 WAV, the speaker, the virtual microphone) would hard-clip it without a word. A limiter turns
those peaks down smoothly instead, and the node counts the samples it touched.

No look-ahead, so no added latency: the gain drops at once to what the sample needs (instant attack) and
recovers at ``release_db_per_s`` (linear in dB). That recursion, G[n] = min(0, T[n], G[n−1] + r) with
T[n] = the dB the sample needs, has the closed form G[n] = min(0, min over k ≤ n of T[k] + r·(n − k)),
so a block is limited with one cumulative minimum, and cutting the stream into blocks changes nothing.
"""

from __future__ import annotations

import numpy as np


class PeakLimiter:
    """One voice's limiter: ``process(samples)`` returns them limited to ``ceiling``, state carried."""

    def __init__(self, sample_rate_hz: int, ceiling: float = 0.97, release_db_per_s: float = 60.0) -> None:
        if not 0.0 < ceiling <= 1.0 or release_db_per_s <= 0.0 or sample_rate_hz <= 0:
            raise ValueError(f"limiter: ceiling {ceiling} must be in (0, 1], release {release_db_per_s} dB/s "
                             f"and rate {sample_rate_hz} Hz above 0")
        self.ceiling = float(ceiling)
        self.release_db = release_db_per_s / sample_rate_hz  # dB per sample
        self.gain_db = 0.0  # the gain applied to the last sample

    def process(self, samples: np.ndarray) -> tuple[np.ndarray, int]:
        """(limited samples as float32, how many of them were turned down)."""
        x = np.asarray(samples, np.float32).reshape(-1)
        if x.size == 0:
            return x, 0
        peak = np.abs(x)
        if self.gain_db == 0.0 and float(peak.max()) <= self.ceiling:
            return x, 0  # the common case: nothing to do, bit-exact
        with np.errstate(divide="ignore"):
            need = np.minimum(0.0, 20.0 * np.log10(self.ceiling / np.maximum(peak, 1e-30)))
        n = np.arange(x.size, dtype=np.float64)
        carried = self.gain_db + self.release_db * (n + 1)
        ramp = np.minimum.accumulate(need - self.release_db * n) + self.release_db * n
        gain_db = np.minimum(0.0, np.minimum(carried, ramp))
        self.gain_db = float(gain_db[-1])
        gain = 10.0 ** (gain_db / 20.0)
        # rounding in the dB round trip may leave a peak a hair above the ceiling: clip that hair only
        out = np.clip(x * gain, -self.ceiling, self.ceiling).astype(np.float32)
        return out, int(np.count_nonzero(gain_db < 0.0))
