"""Microphone node: file replay (PyAV, resampled, paced, looped) and the real PyAudio device
path through a PulseAudio null sink (a known tone in; frequency, level and stamps out)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from nodes.microphone import Microphone
from pipeline.harness import Harness
from tests.pulse import PulseServer, pulse, start_daemon, stop_daemon, tone_hz  # noqa: F401  (fixture)

SR = 16000


def tone(seconds: float, hz: float, rate_hz: int = SR, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate_hz)) / rate_hz
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def peak_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=16 * SR))
    return float(np.argmax(spectrum) / 16)


def timed(h: Harness) -> list[int]:
    """Record when each message leaves the node."""
    times: list[int] = []
    send = h.send

    def stamped(port, msg):  # noqa: ANN001
        times.append(time.monotonic_ns())
        send(port, msg)

    h.send = stamped  # type: ignore[method-assign]
    return times


@pytest.fixture
def stereo_48k(tmp_path: Path) -> Path:
    """0.3 s of 1 kHz at 48 kHz stereo: the node must downmix and resample it."""
    path = tmp_path / "tone.wav"
    x = tone(0.3, 1000.0, 48000)
    sf.write(path, np.stack([x, x], axis=1), 48000, subtype="FLOAT")
    return path


def test_file_replay_is_resampled_chunked_and_stamped(stereo_48k: Path) -> None:
    with Harness(Microphone, {"source": str(stereo_48k), "realtime": False}) as h:
        h.run_source()
    chunks = h.outputs["audio"]
    assert [c.samples.shape for c in chunks] == [(160,)] * 30  # 0.3 s → 30 chunks of 10 ms
    assert [c.first_sample for c in chunks] == list(range(0, 4800, 160))
    assert [c.capture_ns - h.epoch_ns for c in chunks] == [10_000_000 * i for i in range(30)]
    x = np.concatenate([c.samples for c in chunks])
    assert abs(peak_hz(x[800:-800]) - 1000.0) < 1.0
    assert np.sqrt(np.mean(x[800:-800] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_realtime_replay_releases_each_chunk_when_it_would_have_been_recorded(stereo_48k: Path) -> None:
    with Harness(Microphone, {"source": str(stereo_48k), "chunk_ms": 20}) as h:
        sent = timed(h)
        h.run_source()
    chunks = h.outputs["audio"]
    late_ms = [(t - c.capture_ns) / 1e6 - 20 for t, c in zip(sent, chunks)]  # a chunk is whole 20 ms after its start
    assert min(late_ms) >= 0, late_ms
    assert np.percentile(late_ms, 50) < 5, late_ms


def test_loop_keeps_counting_samples(stereo_48k: Path) -> None:
    with Harness(Microphone, {"source": str(stereo_48k), "realtime": False, "loop": True}) as h:
        h.run_source(max_steps=75)  # 2.5 passes of 30 chunks
    firsts = [c.first_sample for c in h.outputs["audio"]]
    assert len(firsts) >= 70 and firsts == list(range(0, 160 * len(firsts), 160))


def test_bad_params_are_refused() -> None:
    with pytest.raises(ValueError, match="whole number of samples"):
        Microphone.make_params({"chunk_ms": 10, "sample_rate_hz": 22050 + 1})
    with pytest.raises(ValueError, match="no such file"):
        Microphone.make_params({"source": "/no/such/recording.wav"})


def test_device_hears_a_tone_with_the_right_frequency_level_and_time(pulse: PulseServer) -> None:
    """The real device path: PyAudio callback → ring → 10 ms chunks, while pacat plays 440 Hz."""
    with Harness(Microphone, {"source": "default"}) as h:
        sent = timed(h)
        deadline = time.monotonic() + 8
        while not h.outputs["audio"] and time.monotonic() < deadline:  # the stream's start
            h.node.step()
        assert h.outputs["audio"], f"no audio from the device: {h.node.counters}"
        for _ in range(10):
            h.node.step()
        t_play_ns = time.monotonic_ns()
        player = pulse.play(tone(0.8, 440.0))
        while h.outputs["audio"][-1].capture_ns < t_play_ns + 1_100_000_000 and time.monotonic() < deadline + 5:
            h.node.step()
        player.wait(5)
        counters = dict(h.node.counters)
    chunks = h.outputs["audio"]
    assert counters["connected"] == 1 and counters["overflows"] == 0 and counters["gap_samples"] == 0
    assert all(c.samples.shape == (160,) for c in chunks)
    assert np.all(np.diff([c.first_sample for c in chunks]) == 160)
    stamps = np.array([c.capture_ns for c in chunks])
    assert np.all(np.abs(np.diff(stamps) - 10_000_000) <= 1)  # the sample clock: no jitter
    # delivered soon after the last sample was captured, never before
    delay_ms = (np.array(sent) - stamps) / 1e6 - 10
    # (the anchor is the least-delayed callback seen so far: a few ms of slack for its error)
    assert delay_ms.min() > -6 and np.percentile(delay_ms, 50) < 30, delay_ms

    x = np.concatenate([c.samples for c in chunks])
    loud = np.flatnonzero(np.abs(x) > 0.05)
    assert loud.size, f"the tone was not heard (max {np.abs(x).max():.4f})"
    onset_ns = stamps[loud[0] // 160] + (loud[0] % 160) * 1e9 / SR
    # the stamp of the tone's first sample vs. when pacat started: process start + buffering
    assert -30 < (onset_ns - t_play_ns) / 1e6 < 120, (onset_ns - t_play_ns) / 1e6
    body = x[loud[0] + 800:loud[-1] - 800]
    assert len(body) > 0.5 * SR
    assert abs(tone_hz(body) - 440.0) < 1.0
    # level per 10 ms block, median: an underrun of the *player* (pacat starved on a loaded
    # machine) leaves silent blocks that say nothing about the capture path
    block_rms = np.sqrt(np.mean(body[: len(body) // 160 * 160].reshape(-1, 160) ** 2, axis=1))
    assert np.median(block_rms) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)


def test_missing_device_is_retried_and_counted_while_the_node_runs(pulse: PulseServer) -> None:
    with Harness(Microphone, {"source": "no such microphone", "retry_initial_s": 0.05, "retry_max_s": 0.1}) as h:
        deadline = time.monotonic() + 5
        while h.node.counters["open_failures"] < 3 and time.monotonic() < deadline:
            assert h.node.step() is True  # still running
    assert h.node.counters["open_failures"] >= 3 and h.node.counters["connected"] == 0
    assert not h.outputs["audio"]


def test_sound_server_dying_and_coming_back(pulse: PulseServer, monkeypatch: pytest.MonkeyPatch,
                                            tmp_path_factory: pytest.TempPathFactory) -> None:
    """A device that disappears mid-run: counted, retried, and the stream resumes with a gap
    (first_sample jumps forward by the time away, never back)."""
    directory = str(tmp_path_factory.mktemp("pa"))
    monkeypatch.setenv("PULSE_SERVER", start_daemon(directory))
    try:
        with Harness(Microphone, {"source": "default", "retry_initial_s": 0.1, "retry_max_s": 0.2}) as h:
            def step_until(condition, seconds: float) -> None:  # noqa: ANN001
                deadline = time.monotonic() + seconds
                while not condition() and time.monotonic() < deadline:
                    h.node.step()
                assert condition(), h.node.counters

            step_until(lambda: len(h.outputs["audio"]) >= 5, 8)
            stop_daemon(directory)
            step_until(lambda: h.node.counters["disconnects"] == 1 and h.node.counters["open_failures"] >= 1, 5)
            before = len(h.outputs["audio"])
            start_daemon(directory)
            step_until(lambda: len(h.outputs["audio"]) >= before + 5, 10)
    finally:
        stop_daemon(directory)
    chunks = h.outputs["audio"]
    firsts = np.array([c.first_sample for c in chunks])
    steps = np.diff(firsts)
    assert np.all(steps >= 160) and (steps > 160).sum() == 1  # one gap: the time the server was away
    gap_s = steps[before - 1] / SR
    time_away_s = (chunks[before].capture_ns - chunks[before - 1].capture_ns) / 1e9
    assert gap_s == pytest.approx(time_away_s, abs=0.05)
