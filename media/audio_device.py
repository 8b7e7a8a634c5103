"""Sound cards through PyAudio (PortAudio): a capture stream and a playback stream.

Both run PortAudio in callback mode. The callback runs on PortAudio's real-time thread,
and it must not block, allocate much or wait on Python work, or the device drops samples.
So each callback only copies into or out of a preallocated ring buffer and notes the time.
All other work (chunking, stamping, sending) happens in the node's own thread. The
python-sounddevice documentation sets the same rule for its callbacks.

Capture timestamps come from the sample count, anchored to ``time.monotonic_ns()``. A sample
count has no per-callback jitter, and it is exact between samples. The anchor is the first
callback's arrival time minus one buffer. PortAudio's ``input_buffer_adc_time`` is not
used: on ALSA through PulseAudio it was measured 200–290 ms off. A tone played in reached
the callback 23–33 ms after playback started, while the ADC time put it 190–250 ms before
playback started. The callbacks themselves arrive 0–15 ms after the sample clock says.

Every callback's arrival is still compared with the sample clock, over windows of
``DRIFT_WINDOW`` callbacks. The smallest difference in a window has the scheduling
jitter removed, so what is left is real. If it passes ``MAX_DRIFT_NS`` and the device
reported an overflow, the device lost samples: ``first_sample`` jumps by that much, and
downstream nodes see the hole instead of audio shifted in time. Callbacks *earlier* than the
sample clock allows mean the first one came late: the anchor moves back at once. A clock running
*late* without an overflow moves the anchor only after ``DRIFT_CONFIRM`` windows in a row (3 s):
real drift lasts, while a loaded machine can delay every callback of one window, and moving the
anchor then would put a jump into timestamps that should have none.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

MAX_DRIFT_NS = 20_000_000  # sample clock vs. callback arrival: beyond 20 ms, correct it
DRIFT_WINDOW = 50  # callbacks (0.5 s at 10 ms) whose least-delayed arrival is trusted
#: consecutive windows a *late* sample clock must be seen in before the anchor moves: real device
#: drift is a few ppm and lasts, a loaded machine can delay every callback of one window
DRIFT_CONFIRM = 6


class AudioDeviceError(RuntimeError):
    """No such device, no device at all, or a device that stopped delivering; says which."""


class Ring:
    """A single-producer single-consumer float32 ring. The callback is one side, the node
    the other; each side moves only its own counter (plain ints, atomic under the GIL)."""

    def __init__(self, capacity: int) -> None:
        self.buf = np.zeros(capacity, np.float32)
        self.written = 0  # total samples ever written
        self.read = 0  # total samples ever read

    def available(self) -> int:
        return self.written - self.read

    def write(self, x: np.ndarray) -> None:
        cap, n = len(self.buf), len(x)
        x = x[-cap:]  # longer than the ring: only the newest fit (the reader counts the rest lost)
        start = (self.written + n - len(x)) % cap
        first = min(len(x), cap - start)
        self.buf[start:start + first] = x[:first]
        self.buf[:len(x) - first] = x[first:]
        self.written += n

    def read_into(self, out: np.ndarray) -> None:
        cap = len(self.buf)
        start = self.read % cap
        first = min(len(out), cap - start)
        out[:first] = self.buf[start:start + first]
        out[first:] = self.buf[:len(out) - first]
        self.read += len(out)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """PortAudio probes ALSA and JACK at start and prints pages of harmless noise on fd 2."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _portaudio() -> Any:
    try:
        import pyaudio
    except ImportError as exc:
        raise AudioDeviceError(f"PyAudio is not installed ({exc}): pip install 'earshot[audio]' "
                               "(needs the PortAudio library, e.g. apt-get install portaudio19-dev)") from None
    with _quiet_stderr():
        return pyaudio.PyAudio()


def list_devices(kind: str = "input") -> list[dict]:
    """Devices that can record (``input``) or play (``output``), as PortAudio describes them."""
    pa = _portaudio()
    try:
        return _devices(pa, kind)
    finally:
        pa.terminate()


def _devices(pa: Any, kind: str) -> list[dict]:
    key = "maxInputChannels" if kind == "input" else "maxOutputChannels"
    infos = (pa.get_device_info_by_index(i) for i in range(pa.get_device_count()))
    return [d for d in infos if d[key] > 0]


def find_device(pa: Any, device: str | int | None, kind: str = "input") -> dict:
    """``None``/``"default"`` → the system default; an int or digit string → that index; any
    other string → the device with that name, else the only one whose name contains it."""
    devices = _devices(pa, kind)
    names = [f"{d['index']}: {d['name']}" for d in devices]
    if isinstance(device, str) and device.isdigit():
        device = int(device)
    if device is None or device == "default":
        try:
            return pa.get_default_input_device_info() if kind == "input" else pa.get_default_output_device_info()
        except OSError:
            raise AudioDeviceError(f"no default {kind} device (no sound card or sound server?); "
                                   f"{kind} devices: {names or 'none'}") from None
    if isinstance(device, int):
        match = [d for d in devices if d["index"] == device]
    else:
        match = ([d for d in devices if d["name"] == device]
                 or [d for d in devices if device.lower() in d["name"].lower()])
    if len(match) != 1:
        why = "no" if not match else "more than one"
        raise AudioDeviceError(f"{why} {kind} device matches {device!r}; {kind} devices: {names or 'none'}")
    return match[0]


class AudioInput:
    """Records mono float32 from a device; ``read()`` returns hop-sized blocks with stamps.

    ``overflows`` counts callbacks where the device reported lost input. ``overruns`` counts
    samples that the reader was too slow to collect before the ring wrapped.
    ``gap_samples`` counts samples that the device lost, as the arrival times show.
    """

    def __init__(self, device: str | int | None = None, sample_rate_hz: int = 16000,
                 frames_per_buffer: int = 160, buffer_s: float = 2.0) -> None:
        import pyaudio

        self.sample_rate_hz = sample_rate_hz
        self.ring = Ring(int(buffer_s * sample_rate_hz))
        self.overflows = self.overruns = self.gap_samples = 0
        self.drift_ns = 0  # the last window's least-delayed arrival minus the sample clock
        self._arrival: tuple[int, int] | None = None  # (samples written, monotonic ns) at the last callback
        self._anchor_ns: int | None = None  # monotonic time of sample 0
        self._skipped = 0  # samples added to first_sample for device gaps
        self._window: list[int] = []  # arrival − sample clock, per callback seen by read()
        self._late_windows: list[int] = []  # the last consecutive windows whose clock ran late
        self._last_seen = 0  # samples written at the last arrival put in the window
        self._overflows_seen = 0
        self._pa = _portaudio()
        try:
            info = find_device(self._pa, device, "input")
            self.device_name = f"{info['index']}: {info['name']}"
            with _quiet_stderr():
                self.stream = self._pa.open(format=pyaudio.paFloat32, channels=1, rate=sample_rate_hz, input=True,
                                            input_device_index=int(info["index"]),
                                            frames_per_buffer=frames_per_buffer, stream_callback=self._callback)
        except AudioDeviceError:
            self._pa.terminate()
            raise
        except (OSError, ValueError) as exc:  # PortAudio refused: bad rate, device busy or gone
            self._pa.terminate()
            raise AudioDeviceError(f"cannot open input device {device!r} at {sample_rate_hz} Hz: {exc}") from None

    def _callback(self, in_data: bytes | None, frame_count: int, time_info: dict, status: int) -> tuple[None, int]:
        now_ns = time.monotonic_ns()
        if status & 0x2:  # paInputOverflow
            self.overflows += 1
        if in_data:
            self.ring.write(np.frombuffer(in_data, np.float32))
        self._arrival = (self.ring.written, now_ns)  # one tuple: the reader sees both or neither
        return None, 0  # paContinue

    def read(self, n: int, timeout_s: float = 1.0, start_timeout_s: float = 5.0) -> tuple[np.ndarray, int, int]:
        """The next ``n`` samples, the stream index of the first one, and its capture time in
        monotonic ns. Waits for them; raises AudioDeviceError if nothing comes for ``timeout_s``
        (``start_timeout_s`` for the first buffer: through PulseAudio it took up to 1.7 s)."""
        ring = self.ring
        deadline = time.monotonic() + (timeout_s if ring.written else start_timeout_s)
        while ring.available() < n:
            if not self.stream.is_active():
                raise AudioDeviceError(f"input device {self.device_name!r} stopped (unplugged, or the sound "
                                       "server stopped?)")
            if time.monotonic() > deadline:
                raise AudioDeviceError(f"input device {self.device_name!r} delivered no audio for "
                                       f"{timeout_s if ring.written else start_timeout_s:.1f} s")
            # sleep about until the missing samples should be there, in small steps
            time.sleep(min(0.005, (n - ring.available()) / self.sample_rate_hz))
        lost = ring.available() - len(ring.buf)
        if lost > 0:  # we were too slow: the oldest samples were overwritten
            self.overruns += lost  # (ring indices count them: first_sample jumps over them)
            ring.read += lost
        start = ring.read
        out = np.empty(n, np.float32)
        ring.read_into(out)
        self._track_clock()
        return out, start + self._skipped, self._anchor_ns + round((start + self._skipped) * 1e9 / self.sample_rate_hz)

    def _track_clock(self) -> None:
        written, arrival_ns = self._arrival
        ns_per_sample = 1e9 / self.sample_rate_hz
        if self._anchor_ns is None:  # the buffer that just arrived began about one buffer ago
            self._anchor_ns = arrival_ns - round(written * ns_per_sample)
        if written == self._last_seen:
            return
        self._last_seen = written
        self._window.append(arrival_ns - (self._anchor_ns + round((written + self._skipped) * ns_per_sample)))
        if len(self._window) < DRIFT_WINDOW:
            return
        self.drift_ns = min(self._window)
        self._window.clear()
        self._late_windows = [*self._late_windows, self.drift_ns][-DRIFT_CONFIRM:] if self.drift_ns > MAX_DRIFT_NS else []
        if abs(self.drift_ns) <= MAX_DRIFT_NS:
            return
        if self.drift_ns > 0 and self.overflows > self._overflows_seen:  # samples lost: leave a hole
            gap = round(self.drift_ns / ns_per_sample)
            self.gap_samples += gap
            self._skipped += gap
            self._late_windows = []
        elif self.drift_ns < 0:  # callbacks came before the clock said they could: the anchor was late
            self._anchor_ns += self.drift_ns
        elif len(self._late_windows) == DRIFT_CONFIRM:  # late for seconds on end: the clocks drift apart
            self._anchor_ns += min(self._late_windows)
            self._late_windows = []
        self._overflows_seen = self.overflows

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.stream.stop_stream()
            self.stream.close()
        self._pa.terminate()


class AudioOutput:
    """Plays mono float32 on a device. ``write()`` never blocks the caller's loop.

    Samples wait in a ring of ``max_latency_ms``. When it is full, new samples are dropped
    (``overruns``), so latency stays bounded. Playback starts, and restarts after the ring
    runs dry (``underruns``), once ``prefill_ms`` are queued, so a late chunk gives one short
    gap and not a crackle every buffer.
    """

    def __init__(self, device: str | int | None = None, sample_rate_hz: int = 16000,
                 frames_per_buffer: int = 320, prefill_ms: float = 60.0, max_latency_ms: float = 500.0) -> None:
        import pyaudio

        self.sample_rate_hz = sample_rate_hz
        self.ring = Ring(int(max_latency_ms * sample_rate_hz / 1000))
        self.prefill = int(prefill_ms * sample_rate_hz / 1000)
        self.playing = False
        self.overruns = self.underruns = self.played = 0
        self._pa = _portaudio()
        try:
            info = find_device(self._pa, device, "output")
            self.device_name = f"{info['index']}: {info['name']}"
            with _quiet_stderr():
                self.stream = self._pa.open(format=pyaudio.paFloat32, channels=1, rate=sample_rate_hz, output=True,
                                            output_device_index=int(info["index"]),
                                            frames_per_buffer=frames_per_buffer, stream_callback=self._callback)
        except AudioDeviceError:
            self._pa.terminate()
            raise
        except (OSError, ValueError) as exc:
            self._pa.terminate()
            raise AudioDeviceError(f"cannot open output device {device!r} at {sample_rate_hz} Hz: {exc}") from None

    def write(self, samples: np.ndarray) -> None:
        """Queue mono samples (any float dtype, clipped to [-1, 1]) for playback."""
        if not self.stream.is_active():
            raise AudioDeviceError(f"output device {self.device_name!r} stopped")
        x = np.clip(np.asarray(samples, np.float32).reshape(-1), -1.0, 1.0)
        room = len(self.ring.buf) - self.ring.available()
        if len(x) > room:
            self.overruns += len(x) - room
            x = x[:room]
        self.ring.write(x)

    def _callback(self, in_data: None, frame_count: int, time_info: dict, status: int) -> tuple[bytes, int]:
        out = np.zeros(frame_count, np.float32)
        have = self.ring.available()
        if not self.playing and have >= self.prefill:
            self.playing = True
        if self.playing:
            n = min(have, frame_count)
            self.ring.read_into(out[:n])
            self.played += n
            if n < frame_count:
                self.underruns += 1
                self.playing = False
        return out.tobytes(), 0  # paContinue

    def drain(self, timeout_s: float = 2.0) -> None:
        """Wait until what was written has been handed to the device (pads a short tail)."""
        if 0 < self.ring.available() < self.prefill and not self.playing:
            self.playing = True  # play a tail shorter than the prefill too
        deadline = time.monotonic() + timeout_s
        while self.ring.available() and time.monotonic() < deadline and self.stream.is_active():
            time.sleep(0.005)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.stream.stop_stream()
            self.stream.close()
        self._pa.terminate()
