"""A real sound device for the tests: a PulseAudio daemon whose only card is a null sink.

Machines without a sound card (CI, containers) still get a real, real-time-paced PyAudio
path: what is played to the sink ``vsink`` is heard on its monitor ``vsink.monitor``, the
default source. So a test plays a known signal in and checks what the microphone node
records, or plays through ``AudioOutput`` and records the sink with ``parec``.

Use it from a test module::

    from tests.pulse import pulse  # noqa: F401  (the fixture)

    def test_something(pulse: PulseServer) -> None:
        with pulse.recording() as rec:
            pulse.play(tone).wait()
        samples = rec.samples

The fixture reuses a daemon named by ``PULSE_SERVER`` (``.ci/run`` starts one with
``.ci/pulseaudio.sh``), or starts a private one for this pytest session and stops it at
the end. It skips, loudly, only when no daemon can start; with ``EARSHOT_REQUIRE_AUDIO=1``
(CI) that is a failure instead, so a broken setup cannot pass as "skipped".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "pulseaudio.sh"
RATE_HZ = 16000  # the null sink's rate: nothing is resampled on the way


@dataclass
class PulseServer:
    server: str  # the PULSE_SERVER value, e.g. unix:/tmp/earshot-pulse-x/native
    sink: str = "vsink"
    monitor: str = "vsink.monitor"

    def env(self) -> dict[str, str]:
        return {**os.environ, "PULSE_SERVER": self.server}

    def play(self, samples: np.ndarray, rate_hz: int = RATE_HZ) -> subprocess.Popen:
        """Start playing mono float32 ``samples`` into the sink; ``.wait()`` on the result."""
        proc = subprocess.Popen(
            ["pacat", "--playback", "--raw", "--format=float32le", f"--rate={rate_hz}", "--channels=1",
             "--latency-msec=20", f"--device={self.sink}"],
            stdin=subprocess.PIPE, stderr=subprocess.DEVNULL, env=self.env())
        threading.Thread(target=_feed, args=(proc, np.asarray(samples, np.float32).tobytes()), daemon=True).start()
        return proc

    @contextmanager
    def recording(self, rate_hz: int = RATE_HZ) -> Iterator[Recording]:
        """Record the sink's monitor while the block runs (starts once data flows)."""
        rec = Recording(self, rate_hz)
        try:
            rec.wait_started()
            yield rec
        finally:
            rec.stop()


class Recording:
    """``parec`` of the sink monitor in the background; ``samples`` once stopped."""

    def __init__(self, server: PulseServer, rate_hz: int) -> None:
        self.proc = subprocess.Popen(
            ["parec", "--raw", "--format=float32le", f"--rate={rate_hz}", "--channels=1", "--latency-msec=10",
             f"--device={server.monitor}"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=server.env())
        self.chunks: list[bytes] = []
        self.samples = np.zeros(0, np.float32)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while chunk := self.proc.stdout.read1(4096):
            self.chunks.append(chunk)

    def wait_started(self, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.chunks:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("parec delivered nothing: is the PulseAudio daemon up?")
            time.sleep(0.01)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)
        self._reader.join(5)
        raw = b"".join(self.chunks)
        self.samples = np.frombuffer(raw[:len(raw) // 4 * 4], np.float32)


def _feed(proc: subprocess.Popen, data: bytes) -> None:
    try:
        proc.stdin.write(data)
        proc.stdin.close()
    except BrokenPipeError:
        pass


def start_daemon(directory: str) -> str:
    """Run ``.ci/pulseaudio.sh DIR``; returns PULSE_SERVER or raises RuntimeError saying why."""
    try:
        out = subprocess.run(["bash", str(SCRIPT), directory], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"{SCRIPT.name} did not run: {exc}") from None
    if out.returncode != 0:
        raise RuntimeError(f"{SCRIPT.name} failed: {out.stderr.strip() or out.stdout.strip()}")
    for line in out.stdout.splitlines():
        if line.startswith("export PULSE_SERVER="):
            return line.split("=", 1)[1]
    raise RuntimeError(f"{SCRIPT.name} printed no PULSE_SERVER: {out.stdout!r}")


def stop_daemon(directory: str) -> None:
    subprocess.run(["bash", str(SCRIPT), "--stop", directory], capture_output=True, timeout=30)


def _reachable(server: str) -> bool:
    try:
        return subprocess.run(["pactl", "info"], capture_output=True, timeout=5,
                              env={**os.environ, "PULSE_SERVER": server}).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def no_sound(reason: str) -> NoReturn:
    """Skip (loudly) or, where audio is required, fail."""
    banner = f"\n{'!' * 78}\n!! NO SOUND DEVICE: the PyAudio tests did NOT run.\n!! {reason}\n" \
             f"!! Install: apt-get install portaudio19-dev pulseaudio pulseaudio-utils libasound2-plugins\n{'!' * 78}"
    if os.environ.get("EARSHOT_REQUIRE_AUDIO") == "1":
        pytest.fail(banner, pytrace=False)
    warnings.warn(banner, stacklevel=2)
    pytest.skip(banner)


@pytest.fixture(scope="session")
def pulse() -> Iterator[PulseServer]:
    try:
        import pyaudio  # noqa: F401
    except ImportError as exc:
        no_sound(f"PyAudio is not importable ({exc})")
    existing = os.environ.get("PULSE_SERVER")
    if existing and _reachable(existing):
        yield PulseServer(existing)
        return
    directory = tempfile.mkdtemp(prefix="earshot-pulse-")  # short: a unix socket path has ~100 bytes
    try:
        server = start_daemon(directory)
    except RuntimeError as exc:
        shutil.rmtree(directory, ignore_errors=True)
        no_sound(str(exc))
    os.environ["PULSE_SERVER"] = server  # PyAudio in this process (ALSA's pulse plugin) reads it
    try:
        yield PulseServer(server)
    finally:
        if existing is None:
            os.environ.pop("PULSE_SERVER", None)
        else:
            os.environ["PULSE_SERVER"] = existing
        stop_daemon(directory)
        shutil.rmtree(directory, ignore_errors=True)


def tone_hz(x: np.ndarray, sample_rate_hz: int = 16000, block_s: float = 0.1) -> float:
    """The frequency of a captured tone, robust to the *player's* underruns.

    On a loaded machine pacat can starve and leave short silences in what it plays; one spectrum
    over the whole recording then splits its peak at the phase jumps (1-2 Hz off), which says
    nothing about the capture path. So: the spectral peak (1/16 Hz bins) of every 100 ms block in
    which every 10 ms is loud, and their median.
    """
    n = int(block_s * sample_rate_hz)
    peaks = []
    for start in range(0, len(x) - n + 1, n):
        block = x[start:start + n]
        rms_10ms = np.sqrt(np.mean(block[: n // 160 * 160].reshape(-1, 160) ** 2, axis=1))
        if rms_10ms.min() < 0.05:
            continue  # a player underrun (or the tone's edge) in this block
        spectrum = np.abs(np.fft.rfft(block * np.hanning(n), n=16 * sample_rate_hz))
        peaks.append(np.argmax(spectrum) / 16)
    if len(peaks) < 3:
        raise AssertionError(f"only {len(peaks)} clean 100 ms blocks of tone were captured")
    return float(np.median(peaks))
