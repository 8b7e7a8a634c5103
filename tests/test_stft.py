"""Streaming STFT/ISTFT: parity with torch, perfect reconstruction, chunk-size independence."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engines.dsp import (StftConfig, StreamingIstft, StreamingStft, hz_to_mel, istft, log_mel,
                         mel_filterbank, mel_to_hz, stft)

torch = pytest.importorskip("torch")

SR = 16000
FAST = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def noise(n: int, seed: int = 0, amp: float = 0.5) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n) * amp


def torch_window(cfg: StftConfig, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    make = torch.hann_window if cfg.window == "hann" else torch.hamming_window
    return make(cfg.win_length, periodic=True, dtype=dtype)


def torch_stft(x: np.ndarray, cfg: StftConfig, center: bool = False, dtype: torch.dtype = torch.float64) -> np.ndarray:
    spec = torch.stft(torch.from_numpy(x).to(dtype), cfg.n_fft, cfg.hop_length, cfg.win_length,
                      window=torch_window(cfg, dtype), center=center, return_complex=True)
    return spec.numpy().T


def push_in_chunks(engine: StreamingStft | StreamingIstft, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    out, i, k = [], 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        out.append(engine.push(x[i:i + n]))
        i, k = i + n, k + 1
    return np.concatenate(out) if out else np.zeros(0)


configs = st.builds(
    lambda n_fft_pow, win_frac, hop_frac, window: StftConfig(
        n_fft=2 ** n_fft_pow, win_length=max(8, int(2 ** n_fft_pow * win_frac)),
        hop_length=max(1, int(max(8, int(2 ** n_fft_pow * win_frac)) * hop_frac)), window=window),
    st.integers(6, 10), st.floats(0.5, 1.0), st.floats(0.1, 0.5), st.sampled_from(["hann", "hamming"]))


# -- STFT parity ---------------------------------------------------------------------------


@pytest.mark.parametrize("window", ["hann", "hamming"])
def test_default_stft_matches_torch(window: str) -> None:
    cfg = StftConfig(window=window)
    x = noise(SR)
    ours = stft(x, cfg)
    ref = torch_stft(x, cfg)
    assert ours.shape == ref.shape == (97, 257)
    assert np.abs(ours - ref).max() <= 1e-5
    # also against torch in float32 (what a float32 model pipeline computes), relative to scale
    ref32 = torch_stft(x, cfg, dtype=torch.float32)
    assert np.abs(ours - ref32).max() / np.abs(ref).max() <= 1e-5


@FAST
@given(cfg=configs, seed=st.integers(0, 2**16), center=st.booleans())
def test_stft_matches_torch_for_any_geometry(cfg: StftConfig, seed: int, center: bool) -> None:
    x = noise(3 * cfg.n_fft + 17, seed)
    # center=True is torch's default: the same as reflect-padding n_fft // 2 and center=False
    padded = np.pad(x, cfg.n_fft // 2, mode="reflect") if center else x
    assert np.abs(stft(padded, cfg) - torch_stft(x, cfg, center=center)).max() <= 1e-5


# -- chunk-size independence ---------------------------------------------------------------


def test_one_sample_or_one_second_at_a_time_gives_identical_frames() -> None:
    x = noise(2 * SR, seed=3)
    by_sample = push_in_chunks(StreamingStft(), x, [1])
    by_second = push_in_chunks(StreamingStft(), x, [SR])
    assert by_sample.shape == by_second.shape
    assert np.array_equal(by_sample, by_second)
    offline = stft(x)  # streaming may emit one more frame: its window is complete, n_fft is not
    assert np.array_equal(by_second[: len(offline)], offline)


@FAST
@given(cfg=configs, sizes=st.lists(st.integers(1, 700), min_size=1, max_size=8), seed=st.integers(0, 2**16))
def test_streaming_stft_is_chunk_size_independent(cfg: StftConfig, sizes: list[int], seed: int) -> None:
    x = noise(2000, seed)
    whole = StreamingStft(cfg).push(x)
    assert np.array_equal(push_in_chunks(StreamingStft(cfg), x, sizes), whole)


# -- ISTFT ---------------------------------------------------------------------------------


@pytest.mark.parametrize("window", ["hann", "hamming"])
def test_istft_matches_torch_istft(window: str) -> None:
    # torch.istft(center=False) refuses a zero-padded window (its NOLA check fails on the first
    # `left` samples), so compare with center=True: that is our overlap-add with n_fft//2 trimmed.
    cfg = StftConfig(window=window)
    x = noise(SR, seed=5)
    spec = torch.stft(torch.from_numpy(x), cfg.n_fft, cfg.hop_length, cfg.win_length,
                      window=torch_window(cfg), center=True, return_complex=True)
    ref = torch.istft(spec, cfg.n_fft, cfg.hop_length, cfg.win_length, window=torch_window(cfg),
                      center=True, length=x.size).numpy()
    ours = istft(spec.numpy().T, cfg)[cfg.n_fft // 2: cfg.n_fft // 2 + x.size]
    assert np.abs(ours - ref).max() <= 1e-5


@FAST
@given(cfg=configs, sizes=st.lists(st.integers(1, 40), min_size=1, max_size=5), seed=st.integers(0, 2**16))
def test_streaming_istft_of_stft_reconstructs(cfg: StftConfig, sizes: list[int], seed: int) -> None:
    x = noise(4000, seed)
    frames = StreamingStft(cfg).push(x)
    inverse = StreamingIstft(cfg)
    pieces, i, k = [], 0, 0
    while i < len(frames):
        n = sizes[k % len(sizes)]
        pieces.append(inverse.push(frames[i:i + n]))
        i, k = i + n, k + 1
    y = np.concatenate(pieces + [inverse.flush()])
    assert y.size == (len(frames) - 1) * cfg.hop_length + cfg.n_fft
    edge = cfg.left + cfg.win_length  # away from the edges: every sample covered by a full overlap
    last = (len(frames) - 1) * cfg.hop_length + cfg.left
    assert np.abs(y[edge:last] - x[edge:last]).max() <= 1e-5


def test_streaming_istft_releases_samples_as_soon_as_final() -> None:
    cfg = StftConfig()
    inverse = StreamingIstft(cfg)
    frames = stft(noise(SR, seed=9))
    released = [inverse.push(frames[t:t + 1]).size for t in range(5)]
    # frame 0 releases up to hop + left; each later frame one more hop
    assert released == [cfg.hop_length + cfg.left] + [cfg.hop_length] * 4


# -- log-mel -------------------------------------------------------------------------------


def test_mel_scale_and_filterbank_shape() -> None:
    assert float(hz_to_mel(1000.0)) == pytest.approx(1000.0, abs=0.1)  # the HTK scale's anchor
    assert float(mel_to_hz(hz_to_mel(3210.0))) == pytest.approx(3210.0)
    fb = mel_filterbank(SR, 512, 80)
    assert fb.shape == (80, 257)
    assert fb.min() >= 0 and fb.max() <= 1
    assert (fb.sum(axis=1) > 0).all()  # no empty band at 512-point resolution
    peaks_hz = np.argmax(fb, axis=1) * SR / 512
    assert np.all(np.diff(peaks_hz) >= 0)
    # each centre is where the HTK formula puts it, within one FFT bin
    centres = mel_to_hz(np.linspace(0, hz_to_mel(SR / 2), 82))[1:-1]
    assert np.abs(peaks_hz - centres).max() <= SR / 512


def test_log_mel_of_a_tone_peaks_in_its_band() -> None:
    cfg = StftConfig()
    t = np.arange(SR) / SR
    frames = stft(0.5 * np.sin(2 * np.pi * 1000 * t), cfg)
    lm = log_mel(frames, cfg.mel_filterbank)
    assert lm.dtype == np.float32 and lm.shape == (97, 80)
    band = int(np.argmax(lm.mean(axis=0)))
    centres = mel_to_hz(np.linspace(0, hz_to_mel(SR / 2), 82))[1:-1]
    assert abs(centres[band] - 1000) < 60
    assert np.isfinite(log_mel(np.zeros((2, 257), complex), cfg.mel_filterbank)).all()


# -- the node ------------------------------------------------------------------------------


def test_stft_node_frames_capture_times_and_gaps() -> None:
    from nodes.stft import Stft
    from pipeline.harness import Harness
    from pipeline.messages import AudioChunk

    x = noise(SR, seed=11).astype(np.float32)
    t0 = 1_000_000_000
    with Harness(Stft) as h:
        for start in range(0, SR, 160):
            if start == 8000:
                continue  # a lost chunk: filled with silence, frames stay on the sample grid
            h.feed("audio", AudioChunk(samples=x[start:start + 160], first_sample=start,
                                       capture_ns=t0 + start * 62_500))
        spectra, logmels = h.outputs["spectrum"], h.outputs["logmel"]
        assert h.node.counters["gap_samples"] == 160
    frames = np.concatenate([m.frames for m in spectra])
    assert frames.dtype == np.complex64
    assert [m.first_frame for m in spectra] == list(np.cumsum([0] + [len(m.frames) for m in spectra[:-1]]))
    expected = stft(np.where((np.arange(SR) >= 8000) & (np.arange(SR) < 8160), 0.0, x))
    n = len(expected)
    assert np.abs(frames[:n] - expected).max() <= 1e-5 * np.abs(expected).max()
    assert logmels[0].kind == "logmel" and logmels[0].frames.shape[1] == 80
    # capture time of a message = capture time of the newest sample of its last frame
    for m in spectra[:5]:
        last_frame = m.first_frame + len(m.frames) - 1
        last_sample = last_frame * 160 + 56 + 400 - 1
        assert m.capture_ns == t0 + last_sample * 62_500


def test_a_restarted_stft_node_keeps_the_runs_frame_numbers() -> None:
    """kill -9 and a new process (its ``carried`` kept by the runtime): the frames it makes have the
    numbers, and the values, that the process before would have given them; the ones it never made are
    a gap in ``first_frame``. Chunks of 100 samples, so the restart lands off the hop grid."""
    from nodes.stft import Stft
    from pipeline.harness import Harness
    from pipeline.messages import AudioChunk

    x = noise(SR, seed=12).astype(np.float32)
    offset = 48_000  # the stream was already running when this graph started

    def chunk(start: int) -> AudioChunk:
        return AudioChunk(samples=x[start:start + 100], first_sample=offset + start, capture_ns=10**9 + start * 62_500)

    with Harness(Stft) as whole:
        for start in range(0, SR, 100):
            whole.feed("audio", chunk(start))
    reference = {m.first_frame + i: f for m in whole.outputs["spectrum"] for i, f in enumerate(m.frames)}
    with Harness(Stft) as before:
        for start in range(0, 5000, 100):
            before.feed("audio", chunk(start))
    last_before = max(m.first_frame + len(m.frames) for m in before.outputs["spectrum"])
    after = Harness(Stft)
    after.node.carried.update(before.node.carried)  # what pipeline.runner.Carry hands a restarted process
    with after:
        for start in range(8300, SR, 100):  # 330 ms missed while it was down
            after.feed("audio", chunk(start))
    out = after.outputs["spectrum"]
    first = out[0].first_frame
    assert first == (8300 // 160) > last_before  # the grid frame the first chunk falls in; a gap before it
    assert [m.first_frame for m in out] == list(first + np.cumsum([0] + [len(m.frames) for m in out[:-1]]))
    frames = {m.first_frame + i: f for m in out for i, f in enumerate(m.frames)}
    settled = [t for t in frames if t * 160 >= 8300]  # frames wholly after the restart point
    assert len(settled) > 40
    for t in settled:
        np.testing.assert_allclose(frames[t], reference[t], atol=1e-5 * np.abs(reference[t]).max())


def test_stft_node_rejects_wrong_rate_and_bad_params() -> None:
    from nodes.stft import Stft
    from pipeline.harness import Harness
    from pipeline.messages import AudioChunk
    from pipeline.node import BadInput

    with Harness(Stft) as h, pytest.raises(BadInput, match="8000 Hz"):
        h.feed("audio", AudioChunk(samples=np.zeros(160, np.float32), sample_rate_hz=8000))
    with pytest.raises(ValueError, match="win_length"):
        Stft.make_params({"win_length": 1024})
    with pytest.raises(ValueError, match="window"):
        Stft.make_params({"window": "kaiser"})
