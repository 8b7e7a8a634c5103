"""The virtual microphone on the PulseAudio stand-in: what the sink is given comes out of the
"Earshot" source that a call app would record, intact, and the modules go away after.

(Latency is not asserted here: an idle null sink's monitor sends nothing until the first sound, so a
recording has no clock of its own to measure against; the position of the voice in it is checked.)"""

from __future__ import annotations

import subprocess
import threading
import time

import numpy as np

from media.sinks import VirtualMicSink, voice_track
from media.sinks.virtual_mic import short_names
from tests.pulse import PulseServer, pulse  # noqa: F401  (fixture)

SR = 16000


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise bursts shaped by a slow random envelope: broadband, non-periodic, easy to align."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    envelope = np.repeat(rng.uniform(0.05, 1.0, n // 800 + 1), 800)[:n]
    return (0.2 * envelope * rng.standard_normal(n)).clip(-0.99, 0.99).astype(np.float32)  # the sink is 16-bit


def locate(heard: np.ndarray, voice: np.ndarray) -> int | None:
    """Where ``voice`` starts in ``heard`` (may be < 0 if its first samples are missing), found from a
    segment a quarter second in; None until that segment is there at full level."""
    probe = voice[SR // 4: SR // 2]
    if len(heard) < len(probe):
        return None
    corr = np.correlate(heard, probe, "valid")
    at = int(np.argmax(corr))
    return at - SR // 4 if corr[at] > 0.5 * np.dot(probe, probe) else None


def si_sdr_db(estimate: np.ndarray, reference: np.ndarray) -> float:
    scale = np.dot(estimate, reference) / np.dot(reference, reference)
    target = scale * reference
    return float(10 * np.log10(np.sum(target ** 2) / np.sum((estimate - target) ** 2)))


def test_the_voice_comes_out_of_the_virtual_microphone(pulse: PulseServer) -> None:
    mic = VirtualMicSink("earshot_test", SR, play_track=7)
    assert mic.open()
    try:
        assert "earshot_test" in short_names("sources") and "earshot_test_sink" in short_names("sinks")
        recorder = subprocess.Popen(["parec", "--raw", "--format=float32le", f"--rate={SR}", "--channels=1",
                                     "--latency-msec=10", "--device=earshot_test"],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=pulse.env())
        chunks: list[bytes] = []
        reader = threading.Thread(target=lambda: [chunks.append(c) for c in iter(lambda: recorder.stdout.read1(4096), b"")],
                                  daemon=True)
        reader.start()
        time.sleep(0.3)  # the recorder is connected before the voice starts
        voice, other = speechlike(2.0, seed=1), speechlike(2.0, seed=2)
        start = time.monotonic()
        for k, i in enumerate(range(0, len(voice), 160)):  # 10 ms blocks, paced as the renderer gets them
            mic.audio({voice_track(7): voice[i:i + 160], voice_track(3): other[i:i + 160]}, first_sample=i)
            time.sleep(max(0.0, start + (k + 1) * 0.01 - time.monotonic()))
        # on a loaded machine PulseAudio may deliver the monitor late: wait for the whole voice
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            heard = np.frombuffer(b"".join(chunks)[: sum(map(len, chunks)) // 4 * 4], np.float32)
            lag = locate(heard, voice)
            if lag is not None and len(heard) >= lag + len(voice):
                break
            time.sleep(0.2)
        recorder.terminate()
        recorder.wait(5)
        reader.join(5)
        raw = b"".join(chunks)
    finally:
        mic.close()
    heard = np.frombuffer(raw[:len(raw) // 4 * 4], np.float32)
    lag = locate(heard, voice)
    assert lag is not None, "the voice never came out of the virtual microphone"
    # an idle null sink's monitor starts sending with the first sound, so a few ms of the very
    # start may be missing (lag < 0); everything after must be there
    aligned = heard[max(lag, 0):lag + len(voice)]
    reference = voice[max(-lag, 0):]
    assert -0.05 * SR < lag and len(aligned) == len(reference), \
        f"{len(aligned) / SR:.2f} s of the {len(voice) / SR:.1f} s voice came out (lag {lag})"
    voice, other = reference, other[max(-lag, 0):]
    # the chosen voice (track 7), not the other one, essentially unchanged (float32 all the way;
    # a starved writer on a loaded machine would leave short silences: judged on the median block)
    blocks = [si_sdr_db(aligned[i:i + 1600], voice[i:i + 1600]) for i in range(0, len(voice) - 1600, 1600)]
    assert np.median(blocks) > 30, blocks
    assert si_sdr_db(aligned, other) < 0
    assert mic.stats()["audio_s_played"] == 2.0
    # closing unloads what it loaded
    assert "earshot_test" not in short_names("sources") and "earshot_test_sink" not in short_names("sinks")


def test_a_name_that_could_inject_module_arguments_is_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="virtual microphone name"):
        VirtualMicSink("earshot sink_name=evil")
