"""The voice limiter: peaks held under the ceiling without look-ahead, quiet voices untouched, the gain
back at the stated rate, and the same output however the stream is cut into blocks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engines.peak_limiter import PeakLimiter

RATE = 16000


def speech_like(seconds: float, peak: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    envelope = np.abs(np.sin(np.linspace(0, 7 * np.pi, n)))  # syllable-like swells
    x = rng.normal(size=n) * envelope
    return (peak * x / np.abs(x).max()).astype(np.float32)


def test_a_voice_under_the_ceiling_passes_bit_exact() -> None:
    x = speech_like(1.0, 0.9)
    out, limited = PeakLimiter(RATE).process(x)
    assert limited == 0 and np.array_equal(out, x)


def test_peaks_over_full_scale_are_held_under_the_ceiling_and_counted() -> None:
    x = speech_like(1.0, 3.0)
    out, limited = PeakLimiter(RATE, ceiling=0.97).process(x)
    assert np.abs(out).max() <= 0.97
    assert 0 < limited < x.size
    quiet = np.abs(x) < 0.3  # far from any peak's release, the voice is unchanged but for the gain
    ratio = out[quiet & (np.abs(x) > 1e-3)] / x[quiet & (np.abs(x) > 1e-3)]
    assert np.all((ratio > 0) & (ratio <= 1.0 + 1e-6)), "a limiter only turns down, never flips or boosts"
    # a hard clip would flatten every sample over the ceiling; the limiter keeps the waveform's shape
    assert np.count_nonzero(np.abs(out) >= 0.97 - 1e-6) < np.count_nonzero(np.abs(x) > 0.97) / 4


def test_the_gain_comes_back_at_the_release_rate() -> None:
    lim = PeakLimiter(RATE, ceiling=0.5, release_db_per_s=60.0)
    spike = np.zeros(RATE, np.float32)
    spike[0] = 1.0  # needs −6.02 dB
    spike[1:] = 0.01  # quiet after it: the gain is what shapes it
    out, _ = lim.process(spike)
    gain_db = 20 * np.log10(out[1:] / spike[1:])
    expected = np.minimum(0.0, 20 * np.log10(0.5) + 60.0 * np.arange(1, RATE) / RATE)
    assert np.allclose(gain_db, expected, atol=1e-3)
    assert lim.gain_db == 0.0  # recovered within the second


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(1, 7999), max_size=12), seed=st.integers(0, 100))
def test_cutting_the_stream_into_blocks_changes_nothing(cuts: list[int], seed: int) -> None:
    x = speech_like(0.5, 2.5, seed)
    whole, n_whole = PeakLimiter(RATE).process(x)
    lim, pieces, n_pieces = PeakLimiter(RATE), [], 0
    for block in np.split(x, sorted(set(cuts))):
        out, n = lim.process(block)
        pieces.append(out)
        n_pieces += n
    assert np.allclose(np.concatenate(pieces), whole, atol=1e-6) and n_pieces == n_whole


@pytest.mark.parametrize("kwargs", [{"ceiling": 0.0}, {"ceiling": 1.5}, {"release_db_per_s": 0.0}])
def test_bad_settings_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="limiter"):
        PeakLimiter(RATE, **kwargs)
