"""Streaming STFT / ISTFT and log-mel: the audio front end of the separator and encoders.

Convention (the same as ``torch.stft(..., center=False)``, so a model trained offline with
torch sees exactly the frames the live graph computes):

* frame ``t`` covers samples ``[t·hop, t·hop + n_fft)``; the ``win_length`` window sits in
  the middle of those ``n_fft`` samples (``left = (n_fft − win_length) // 2`` zeros before
  it), as torch pads a short window;
* windows are *periodic* Hann/Hamming (``torch.hann_window(periodic=True)``), the right
  choice for overlap-add;
* one-sided spectrum, ``n_fft // 2 + 1`` bins, unnormalised forward FFT.

To match ``center=True`` (torch's default) reflect-pad the signal by ``n_fft // 2`` on both
sides first; the tests check both.

Streaming without extra delay: the samples of a frame after its window are multiplied by
zero, so a frame is computed as soon as its *window* is complete (``t·hop + left + win``
samples), not the whole ``n_fft``: 56 samples (3.5 ms) earlier at the defaults, same result.
Every frame is computed from the same samples with the same arithmetic however the audio
is chunked, so feeding 1 sample or 1 s at a time gives identical frames.

The inverse overlap-adds ``irfft(frame) · window`` and divides by the running sum of
``window²`` (the standard least-squares ISTFT, what ``torch.istft`` does); a sample is
released as soon as no later frame can touch it. Where that sum is ~0 (the first ``left``
samples of a stream) the output is 0 rather than a division blow-up.

Computation is numpy float64 (pocketfft): at these sizes it costs a fraction of a
millisecond per second of audio (``benchmarks/stft.py``) and keeps parity errors ~1e-12
instead of float32's ~1e-5; outputs are cast to complex64/float32 for the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


@dataclass(frozen=True)
class StftConfig:
    """STFT geometry. Defaults: 16 kHz, 25 ms window, 10 ms hop, 512-point FFT."""

    sample_rate_hz: int = 16000
    n_fft: int = 512
    hop_length: int = 160
    win_length: int = 400
    window: str = "hann"  # "hann" | "hamming"
    n_mels: int = 80
    f_min_hz: float = 0.0
    f_max_hz: float = 0.0  # 0 = Nyquist

    def __post_init__(self) -> None:
        if not 0 < self.win_length <= self.n_fft:
            raise ValueError(f"win_length must be in (0, n_fft={self.n_fft}], got {self.win_length}")
        if not 0 < self.hop_length <= self.win_length:
            raise ValueError(f"hop_length must be in (0, win_length={self.win_length}], got {self.hop_length}")
        if self.window not in ("hann", "hamming"):
            raise ValueError(f"window must be 'hann' or 'hamming', got {self.window!r}")

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def left(self) -> int:
        """Zeros before the window inside the n_fft frame (torch centres a short window)."""
        return (self.n_fft - self.win_length) // 2

    def frame_end_sample(self, frame_index):
        """Index of the last sample (from the stream's first) frame ``frame_index``'s window includes:
        the frame exists once that sample is captured. Works on ints and integer arrays."""
        return frame_index * self.hop_length + self.left + self.win_length - 1

    @cached_property
    def window_array(self) -> np.ndarray:
        """The ``win_length`` periodic window, float64."""
        return make_window(self.window, self.win_length)

    @cached_property
    def padded_window(self) -> np.ndarray:
        """The window placed in an ``n_fft`` frame, as torch pads it."""
        w = np.zeros(self.n_fft)
        w[self.left:self.left + self.win_length] = self.window_array
        return w

    @cached_property
    def mel_filterbank(self) -> np.ndarray:
        return mel_filterbank(self.sample_rate_hz, self.n_fft, self.n_mels, self.f_min_hz,
                              self.f_max_hz or self.sample_rate_hz / 2)


def make_window(kind: str, length: int) -> np.ndarray:
    """Periodic Hann or Hamming (``torch.hann_window(length, periodic=True)``), float64."""
    n = np.arange(length)
    phase = 2 * np.pi * n / length
    if kind == "hann":
        return 0.5 - 0.5 * np.cos(phase)
    if kind == "hamming":
        return 0.54 - 0.46 * np.cos(phase)
    raise ValueError(f"unknown window {kind!r}")


# -- STFT ----------------------------------------------------------------------------------


def _frames_to_spectrum(segments: np.ndarray, cfg: StftConfig) -> np.ndarray:
    """(T, win) raw windows of samples → (T, F) complex128, as torch.stft computes them."""
    framed = np.zeros((segments.shape[0], cfg.n_fft))
    framed[:, cfg.left:cfg.left + cfg.win_length] = segments * cfg.window_array
    return np.fft.rfft(framed, axis=1)


def stft(signal: np.ndarray, cfg: StftConfig = StftConfig()) -> np.ndarray:
    """Offline STFT of a whole 1-D signal: (T, F) complex128, ``T = 1 + (len − n_fft) // hop``.

    Same frames as ``torch.stft(center=False).T``; the streaming class agrees with it.
    """
    x = np.asarray(signal, dtype=np.float64)
    n_frames = 1 + (x.size - cfg.n_fft) // cfg.hop_length if x.size >= cfg.n_fft else 0
    if n_frames == 0:
        return np.zeros((0, cfg.n_freqs), np.complex128)
    segments = sliding_window_view(x[cfg.left:], cfg.win_length)[::cfg.hop_length][:n_frames]
    return _frames_to_spectrum(segments, cfg)


class StreamingStft:
    """Push samples in any block size; get every frame whose window is complete.

    ``push`` returns (T, F) complex128 (T may be 0). Frame indices count from the first
    sample pushed; ``frames_out`` is the index of the next frame.
    """

    def __init__(self, cfg: StftConfig = StftConfig()) -> None:
        self.cfg = cfg
        self._buffer = np.zeros(0)  # samples from the start of the next frame on
        self.samples_in = 0
        self.frames_out = 0

    def push(self, samples: np.ndarray) -> np.ndarray:
        cfg = self.cfg
        x = np.asarray(samples, dtype=np.float64).reshape(-1)
        self.samples_in += x.size
        buffer = np.concatenate([self._buffer, x]) if self._buffer.size else x
        need = cfg.left + cfg.win_length  # samples a frame needs from its start
        if buffer.size < need:
            self._buffer = buffer.copy()
            return np.zeros((0, cfg.n_freqs), np.complex128)
        n_frames = 1 + (buffer.size - need) // cfg.hop_length
        segments = sliding_window_view(buffer[cfg.left:], cfg.win_length)[::cfg.hop_length][:n_frames]
        spectrum = _frames_to_spectrum(segments, cfg)
        self._buffer = buffer[n_frames * cfg.hop_length:].copy()
        self.frames_out += n_frames
        return spectrum

    def frame_end_sample(self, frame_index: int) -> int:
        """Index of the last sample (from the first pushed) a frame's window includes."""
        return self.cfg.frame_end_sample(frame_index)


# -- ISTFT ---------------------------------------------------------------------------------


class StreamingIstft:
    """Overlap-add inverse: push (T, F) frames, get the samples no later frame can change.

    After ``push`` of frames 0..t, samples ``[0, (t+1)·hop + left)`` have been released;
    ``flush`` releases the tail, for ``(T−1)·hop + n_fft`` samples in all (torch's length).
    """

    def __init__(self, cfg: StftConfig = StftConfig(), eps: float = 1e-11) -> None:
        self.cfg = cfg
        self.eps = eps
        self._acc = np.zeros(cfg.n_fft)  # overlap-add accumulator from sample `released` on
        self._env = np.zeros(cfg.n_fft)  # Σ window² over the same span
        self._w2 = cfg.window_array ** 2
        self.frames_in = 0
        self.released = 0

    def push(self, frames: np.ndarray) -> np.ndarray:
        cfg = self.cfg
        frames = np.asarray(frames)
        if frames.ndim != 2 or frames.shape[1] != cfg.n_freqs:
            raise ValueError(f"expected (T, {cfg.n_freqs}) frames, got {frames.shape}")
        if frames.shape[0] == 0:
            return np.zeros(0)
        n = frames.shape[0]
        lo, hi = cfg.left, cfg.left + cfg.win_length  # only the window's span is nonzero
        chunks = np.fft.irfft(frames, n=cfg.n_fft, axis=1)[:, lo:hi] * cfg.window_array
        # accumulator index 0 = sample `released`; frame t's window starts at t·hop + left,
        # which is never before `released` (we release at most up to there)
        start0 = self.frames_in * cfg.hop_length + lo - self.released
        end = self.frames_in * cfg.hop_length + (n - 1) * cfg.hop_length + cfg.n_fft - self.released
        if end > self._acc.size:
            self._acc = np.concatenate([self._acc, np.zeros(end - self._acc.size)])
            self._env = np.concatenate([self._env, np.zeros(end - self._env.size)])
        for i in range(n):
            s = start0 + i * cfg.hop_length
            self._acc[s:s + cfg.win_length] += chunks[i]
            self._env[s:s + cfg.win_length] += self._w2
        self.frames_in += n
        ready = self.frames_in * cfg.hop_length + cfg.left - self.released
        return self._release(ready)

    def flush(self) -> np.ndarray:
        if self.frames_in == 0:
            return np.zeros(0)
        total = (self.frames_in - 1) * self.cfg.hop_length + self.cfg.n_fft
        return self._release(total - self.released)

    def _release(self, count: int) -> np.ndarray:
        acc, env = self._acc[:count], self._env[:count]
        out = np.where(env > self.eps, acc / np.where(env > self.eps, env, 1.0), 0.0)
        self._acc = self._acc[count:].copy()
        self._env = self._env[count:].copy()
        self.released += count
        return out


def istft(frames: np.ndarray, cfg: StftConfig = StftConfig()) -> np.ndarray:
    """Offline inverse of :func:`stft`: ``(T−1)·hop + n_fft`` float64 samples."""
    inverse = StreamingIstft(cfg)
    return np.concatenate([inverse.push(frames), inverse.flush()])


# -- log-mel -------------------------------------------------------------------------------


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: ``2595 · log10(1 + f / 700)`` (O'Shaughnessy 1987)."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate_hz: int, n_fft: int, n_mels: int, f_min_hz: float = 0.0,
                   f_max_hz: float | None = None) -> np.ndarray:
    """(n_mels, n_fft//2+1) triangular filters, peak 1, centres evenly spaced in HTK mel.

    The construction of ``torchaudio.functional.melscale_fbanks(norm=None, mel_scale="htk")``
    (and librosa's ``htk=True, norm=None``): filter ``m`` rises linearly from centre ``m−1``
    to centre ``m`` and falls to centre ``m+1``, evaluated at the FFT bin frequencies.
    """
    f_max_hz = sample_rate_hz / 2 if f_max_hz is None else f_max_hz
    bin_hz = np.linspace(0.0, sample_rate_hz / 2, n_fft // 2 + 1)
    points_hz = mel_to_hz(np.linspace(hz_to_mel(f_min_hz), hz_to_mel(f_max_hz), n_mels + 2))
    widths_hz = np.diff(points_hz)
    slopes = points_hz[None, :] - bin_hz[:, None]  # (F, n_mels + 2)
    rising = -slopes[:, :-2] / widths_hz[:-1]
    falling = slopes[:, 2:] / widths_hz[1:]
    return np.maximum(0.0, np.minimum(rising, falling)).T


def log_mel(spectrum: np.ndarray, filterbank: np.ndarray, floor: float = 1e-10) -> np.ndarray:
    """(T, F) complex frames → (T, n_mels) float32 ``ln(max(mel power, floor))``.

    Natural log of the power mel spectrogram, floored at 1e-10 (−230 dB re. full scale
    squared): silence stays finite and the floor is far below any microphone's noise.
    """
    power = spectrum.real ** 2 + spectrum.imag ** 2
    return np.log(np.maximum(power @ filterbank.T, floor)).astype(np.float32)
