"""media.audio_device: the ring buffer, device lookup errors, and real playback and capture
through a PulseAudio null sink (tests/pulse.py)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from media.audio_device import AudioDeviceError, AudioInput, AudioOutput, Ring, list_devices
from tests.pulse import PulseServer, pulse, tone_hz  # noqa: F401  (fixture)

SR = 16000


def tone(seconds: float, hz: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_ring_wraps_and_keeps_order() -> None:
    ring = Ring(10)
    out = np.empty(4, np.float32)
    for start in range(0, 40, 4):  # many wraps, writer and reader in step
        ring.write(np.arange(start, start + 4, dtype=np.float32))
        ring.read_into(out)
        assert out.tolist() == list(range(start, start + 4))
    ring.write(np.arange(25, dtype=np.float32))  # longer than the ring: the newest 10 survive
    assert ring.available() == 25
    ring.read += ring.available() - 10
    big = np.empty(10, np.float32)
    ring.read_into(big)
    assert big.tolist() == list(range(15, 25))


def test_unknown_device_names_the_devices_there_are(pulse: PulseServer) -> None:
    names = [d["name"] for d in list_devices("input")]
    assert names, "the PulseAudio null sink should give PortAudio at least one input"
    with pytest.raises(AudioDeviceError, match="no input device matches 'no such mic'.*input devices: .*0: "):
        AudioInput("no such mic")
    with pytest.raises(AudioDeviceError, match="no output device matches 99"):
        AudioOutput(99)


def test_no_sound_server_is_a_clear_error(pulse: PulseServer, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("PULSE_SERVER", f"unix:{tmp_path}/nothing-listens-here")
    with pytest.raises(AudioDeviceError, match="no default input device .*input devices: none"):
        AudioInput()


def test_output_is_heard_on_the_sink(pulse: PulseServer) -> None:
    """AudioOutput → null sink → parec: the tone comes back at its frequency and level."""
    out = AudioOutput("default", SR)
    try:
        with pulse.recording() as rec:
            signal = tone(0.6, 1000.0, 0.25)
            for start in range(0, len(signal), 160):  # 10 ms at a time, as the renderer writes
                out.write(signal[start:start + 160])
                time.sleep(0.005)
            out.drain()
            time.sleep(0.15)
    finally:
        out.close()
    heard = rec.samples
    loud = np.flatnonzero(np.abs(heard) > 0.05)
    assert loud.size, f"nothing heard (max {np.abs(heard).max(initial=0):.3f})"
    body = heard[loud[0] + 800:loud[-1] - 800]  # away from the edges
    assert len(body) > 0.3 * SR, f"only {len(body) / SR:.2f} s of tone"
    assert abs(tone_hz(body) - 1000.0) < 1.0
    # level per 10 ms block, median: a late write on a loaded machine leaves a short silence,
    # which is timing of this test's loop, not the level the output path plays at
    block_rms = np.sqrt(np.mean(body[: len(body) // 160 * 160].reshape(-1, 160) ** 2, axis=1))
    assert np.median(block_rms) == pytest.approx(0.25 / np.sqrt(2), rel=0.05)
    assert out.overruns == 0


def test_input_hears_what_is_played(pulse: PulseServer) -> None:
    """pacat → null sink → its monitor → AudioInput: contiguous, stamped on the sample clock."""
    mic = AudioInput("default", SR, frames_per_buffer=160)
    blocks = []
    try:
        blocks.append(mic.read(160))  # waits out the stream's start
        player = pulse.play(tone(0.5, 440.0))
        t_end = time.monotonic_ns() + 800_000_000
        while blocks[-1][2] < t_end:
            blocks.append(mic.read(160))
        player.wait(5)
    finally:
        mic.close()
    firsts = np.array([b[1] for b in blocks])
    stamps = np.array([b[2] for b in blocks])
    assert np.all(np.diff(firsts) == 160)
    assert np.all(np.abs(np.diff(stamps) - 10_000_000) <= 1)  # the sample clock: no jitter
    x = np.concatenate([b[0] for b in blocks])
    loud = np.flatnonzero(np.abs(x) > 0.05)
    assert loud.size and abs(tone_hz(x[loud[0] + 400:loud[-1] - 400]) - 440.0) < 1.0
    assert mic.overflows == 0 and mic.gap_samples == 0


def _clock_only(sample_rate_hz: int = 16000):
    """An AudioInput's sample-clock bookkeeping without a device (the clock logic is plain arithmetic)."""
    from media.audio_device import AudioInput

    mic = object.__new__(AudioInput)
    mic.sample_rate_hz, mic.overflows, mic.gap_samples, mic.drift_ns = sample_rate_hz, 0, 0, 0
    mic._anchor_ns, mic._skipped, mic._window, mic._late_windows = None, 0, [], []
    mic._last_seen, mic._overflows_seen = 0, 0
    return mic


def _callbacks(mic, delays_ms, t0_ns: int = 10**12) -> None:
    """One 10 ms callback per delay: it arrives that long after its last sample was captured."""
    for k, delay_ms in enumerate(delays_ms, start=1):
        written = 160 * k
        mic._arrival = (written, t0_ns + written * 62_500 + round(delay_ms * 1e6))
        mic._track_clock()


def test_a_loaded_second_does_not_move_the_sample_clock() -> None:
    """A burst of late callbacks (a busy machine) is not drift: the stamps keep their anchor."""
    mic = _clock_only()
    _callbacks(mic, [2] * 50)
    anchor = mic._anchor_ns
    _callbacks(mic, [2] * 50 + [35] * 100 + [2] * 50)  # 1 s with every callback 35 ms late
    assert mic._anchor_ns == anchor


def test_a_clock_late_for_seconds_is_drift_and_the_anchor_follows() -> None:
    mic = _clock_only()
    _callbacks(mic, [2] * 50)
    anchor = mic._anchor_ns
    _callbacks(mic, [2] * 50 + [35] * (50 * 6))  # 3 s late, window after window
    assert mic._anchor_ns - anchor == pytest.approx(33e6, abs=1e6)


def test_callbacks_earlier_than_the_clock_move_the_anchor_back_at_once() -> None:
    """The first callback came 50 ms late, so the anchor was set 50 ms late: the next window shows it."""
    mic = _clock_only()
    _callbacks(mic, [52] + [2] * 49)
    assert mic.drift_ns == pytest.approx(-50e6, abs=1e6)
    assert mic._anchor_ns == 10**12 + 2_000_000  # now 2 ms (the least delay seen) after the true sample 0
