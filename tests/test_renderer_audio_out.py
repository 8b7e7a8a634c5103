"""The renderer's speaker output, heard back through a real PyAudio stream into a PulseAudio
null sink: the selected voice comes out, the other one does not."""

from __future__ import annotations

import time

import numpy as np
import pytest

from pipeline.harness import Harness
from pipeline.messages import SeparatedAudio
from nodes.renderer import Renderer
from tests.pulse import PulseServer, pulse  # noqa: F401  (fixture)

SR = 16000


def tone(hz: float, seconds: float, amplitude: float) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def band_rms(x: np.ndarray, hz: float) -> float:
    """Level of the component near ``hz`` (±20 Hz), from the spectrum."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) / len(x)
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    return float(np.sqrt(np.sum(spectrum[np.abs(freqs - hz) < 20] ** 2)))


def test_selected_voice_is_played_and_the_other_is_not(pulse: PulseServer, monkeypatch) -> None:
    monkeypatch.setenv("PULSE_SERVER", pulse.server)
    voices = np.stack([tone(440, 0.8, 0.3), tone(1320, 0.8, 0.3)])
    with pulse.recording() as rec:
        with Harness(Renderer, {"audio_out": True, "play_track": 7}, wired={"video", "voices"}) as h:
            for start in range(0, voices.shape[1], 160):  # 10 ms blocks, as the separator sends them
                h.feed("voices", SeparatedAudio(samples=np.ascontiguousarray(voices[:, start:start + 160]),
                                                track_ids=np.array([3, 7]), first_sample=start,
                                                capture_ns=time.monotonic_ns()))
                time.sleep(0.008)
            h.node.sinks["speaker"].output.drain()
            time.sleep(0.2)
    heard = rec.samples
    loud = np.flatnonzero(np.abs(heard) > 0.05)
    assert loud.size, f"nothing heard (max {np.abs(heard).max(initial=0):.3f})"
    body = heard[loud[0] + 800:loud[-1] - 800]
    assert len(body) > 0.4 * SR, f"only {len(body) / SR:.2f} s heard"
    assert np.sqrt(np.mean(body ** 2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.1)  # level intact
    wanted, other = band_rms(body, 1320), band_rms(body, 440)
    assert other < wanted / 100, (wanted, other)  # > 40 dB below: the other voice is not played
