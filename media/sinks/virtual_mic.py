"""The virtual microphone: the chosen face's isolated voice, offered to video-call apps as a mic.

Zoom, Meet and Jitsi can only take audio from a microphone. So the voice goes into a PulseAudio
null sink (PipeWire's pulse server understands the same modules), and ``module-remap-source``
turns that sink's monitor into a source of its own, described as "Earshot": the call app lists it
among its microphones. The voice is written through ``pacat`` (pulseaudio-utils) straight to that
sink, so the user's own speakers and default devices are never touched. Modules this sink loaded
are unloaded at close; ones that already existed (a second run, a user's own setup) are reused
and left alone.

Which voice plays is the speaker sink's rule (`SpeakerSink`): the faces chosen in the browser view
(a shared :class:`media.sinks.sink.VoiceChoice`), else ``play_track``, else the loudest voice; a
change is crossfaded, so the call hears no click.

Latency is bounded, not hoped for. A freshly loaded null sink takes nothing from its input for about
two seconds (PulseAudio 16: ``benchmarks/virtual_mic_latency.py`` found it), and whatever the renderer
wrote meanwhile waited in the pipe to ``pacat`` and reached the call ~1 s behind the lips, for good,
while the full pipe blocked the renderer for up to half a second at a time. So:

* ``open()`` returns once the server really takes audio: it feeds silence in real time and waits until
  the pipe empties as fast as it is filled (at most ``ready_timeout_s``);
* the pipe to ``pacat`` is small and written without blocking, and a block that would make more than
  ``max_backlog_ms`` wait in it is dropped instead — counted (``dropped_s``) and logged once per burst.
  A call then loses a few blocks when the sound server stalls, instead of running late ever after.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import select
import shutil
import subprocess
import termios
import threading
import time
from typing import Any

import numpy as np

from media.sinks.sink import VoiceChoice, seconds
from media.sinks.speaker import SpeakerSink

log = logging.getLogger("earshot.sinks.virtual_mic")

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,47}$")
#: a write of at most this many bytes to a pipe is atomic (POSIX PIPE_BUF on Linux): all of it or none
PIPE_ATOMIC_BYTES = 4096
#: a burst of dropped blocks is logged once it has been quiet this long
DROP_QUIET_S = 1.0


def pactl(*args: str) -> str:
    out = subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=10)
    if out.returncode:
        raise RuntimeError(f"pactl {' '.join(args)}: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


def short_names(kind: str) -> set[str]:
    """Names of the server's sinks or sources (`pactl list short sinks|sources`)."""
    return {line.split("\t")[1] for line in pactl("list", "short", kind).splitlines() if "\t" in line}


def _drain(pipe: Any) -> None:
    """Read ``pipe`` to its end, then close it."""
    with pipe:
        while pipe.read1(4096):
            pass


class VirtualMicSink(SpeakerSink):
    """The speaker sink, whose speaker is a null sink offered to other apps as microphone ``source``."""

    name = "virtual_mic"

    def __init__(self, source: str = "earshot", sample_rate_hz: int = 16000, play_track: int = -1,
                 description: str = "Earshot", latency_ms: int = 20, choice: VoiceChoice | None = None,
                 crossfade_ms: float = 15.0, max_backlog_ms: float = 60.0, ready_timeout_s: float = 5.0) -> None:
        if not NAME_RE.match(source):
            raise ValueError(f"virtual microphone name {source!r}: letters, digits, '_', '.', '-' (≤ 48)")
        super().__init__(None, sample_rate_hz, play_track, choice, crossfade_ms)
        self.source, self.sink = source, f"{source}_sink"
        self.description, self.latency_ms = description, latency_ms
        self.modules: list[str] = []  # the ones we loaded, to unload at close
        self.proc: subprocess.Popen | None = None
        self.max_backlog_bytes = int(max_backlog_ms * sample_rate_hz / 1000) * 4
        self.ready_timeout_s = ready_timeout_s
        self.samples_dropped = 0  # blocks not written because the sound server was not taking them
        self.write_failures = 0
        self._burst: list[float] | None = None  # [first drop, last drop, samples] of the burst not yet logged

    def open(self) -> bool:
        if not (shutil.which("pactl") and shutil.which("pacat")):
            log.warning("virtual microphone off: pactl/pacat not found (apt-get install pulseaudio-utils)")
            return False
        try:
            if self.sink not in short_names("sinks"):
                self.modules.append(pactl("load-module", "module-null-sink", f"sink_name={self.sink}",
                                          f"rate={self.sample_rate_hz}", "channels=1",
                                          f"sink_properties=device.description={self.description}-output").strip())
            if self.source not in short_names("sources"):
                self.modules.append(pactl("load-module", "module-remap-source", f"master={self.sink}.monitor",
                                          f"source_name={self.source}", "channels=1",
                                          f"source_properties=device.description={self.description}").strip())
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            log.warning("virtual microphone off: %s", exc)
            self._unload()
            return False
        self.proc = subprocess.Popen(
            ["pacat", "--playback", "--raw", "--format=float32le", f"--rate={self.sample_rate_hz}", "--channels=1",
             f"--latency-msec={self.latency_ms}", f"--device={self.sink}", "--client-name=earshot", "--verbose"],
            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=False)
        # Audio written before pacat's stream exists would queue in the pipe and then play late
        # forever after (a call would hear the voice that much behind the lips): wait until it is up.
        if not self._stream_ready(timeout_s=10.0):
            log.warning("virtual microphone off: pacat did not connect to %s", self.sink)
            self.close()
            return False
        self._bound_pipe()
        waited = self._wait_until_taken(self.ready_timeout_s)
        if waited is None:
            log.warning("virtual microphone %r: the sound server took no audio for %.1f s; going on (what it "
                        "does not take in time is dropped, counted)", self.source, self.ready_timeout_s)
        log.info("virtual microphone %r (\"%s\") is live%s", self.source, self.description,
                 "" if waited is None else f" (the server took audio after {waited:.2f} s)")
        return True

    def _bound_pipe(self) -> None:
        """A small pipe to pacat, written without blocking: the renderer never waits on the sound server."""
        fd = self.proc.stdin.fileno()
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, max(PIPE_ATOMIC_BYTES, 2 * self.max_backlog_bytes))
        except (OSError, AttributeError):  # not Linux, or a smaller pipe was refused: the backlog check still holds
            pass
        os.set_blocking(fd, False)

    def backlog_bytes(self) -> int:
        """Audio written to pacat's pipe that pacat has not read yet."""
        out = bytearray(4)
        try:
            fcntl.ioctl(self.proc.stdin.fileno(), termios.FIONREAD, out)
        except (OSError, ValueError):
            return 0
        return int.from_bytes(out, "little")

    def _wait_until_taken(self, timeout_s: float) -> float | None:
        """Feed silence in real time, 10 ms at a time and only while the pipe is nearly empty, until the
        pipe has stayed empty for 100 ms: the server is taking audio as it comes. Seconds waited, or None."""
        block = np.zeros(max(1, self.sample_rate_hz // 100), "<f4").tobytes()
        start = time.monotonic()
        empty_since = None
        while time.monotonic() - start < timeout_s and self.proc.poll() is None:
            backlog = self.backlog_bytes()
            if backlog == 0:
                empty_since = empty_since or time.monotonic()
                if time.monotonic() - empty_since >= 0.1:
                    return time.monotonic() - start
            else:
                empty_since = None
            if backlog < len(block):
                try:
                    os.write(self.proc.stdin.fileno(), block)
                except (BlockingIOError, BrokenPipeError, OSError):
                    pass
            time.sleep(0.01)
        return None

    def _stream_ready(self, timeout_s: float) -> bool:
        """Read pacat's verbose stderr until its stream is created (then drain it in the background)."""
        deadline, seen = time.monotonic() + timeout_s, b""
        while time.monotonic() < deadline and self.proc.poll() is None:
            if select.select([self.proc.stderr], [], [], 0.1)[0]:
                seen += self.proc.stderr.read1(4096)
                if b"Stream successfully created" in seen:
                    # keep reading, so pacat never blocks on stderr (from the pipe itself: close() drops self.proc)
                    threading.Thread(target=_drain, args=(self.proc.stderr,), daemon=True).start()
                    return True
        return False

    def _play(self, samples: np.ndarray) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.count_failure()
            return
        data = np.asarray(samples, "<f4").tobytes()
        if self.backlog_bytes() + len(data) > self.max_backlog_bytes:
            self._drop(samples.size)  # the server is behind: sending more would only make the call later
            return
        fd, sent = self.proc.stdin.fileno(), 0
        try:
            while sent < len(data):  # pieces a pipe takes whole or not at all: never half a sample
                sent += os.write(fd, data[sent:sent + PIPE_ATOMIC_BYTES])
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                self.count_failure()
                return
        self.samples_played += sent // 4
        if sent < len(data):
            self._drop((len(data) - sent) // 4)
        self._log_drops()

    def _drop(self, samples: int) -> None:
        self.samples_dropped += samples
        now = time.monotonic()
        if self._burst is None:
            self._burst = [now, now, 0]
        self._burst[1] = now
        self._burst[2] += samples

    def _log_drops(self, force: bool = False) -> None:
        """One line per burst of dropped audio, once the burst is over (or at close)."""
        if self._burst is None or not (force or time.monotonic() - self._burst[1] >= DROP_QUIET_S):
            return
        first, last, samples = self._burst
        self._burst = None
        log.warning("virtual microphone %r: the sound server fell behind; %.0f ms of audio dropped over %.1f s to "
                    "keep the call in time with the video (counted: dropped_s)", self.source,
                    1e3 * samples / self.sample_rate_hz, last - first)

    def count_failure(self) -> None:
        self.write_failures += 1
        if self.write_failures == 1:
            log.error("virtual microphone %r: the pacat writer is gone; its audio is dropped (counted)", self.source)

    def close(self) -> list:
        self._log_drops(force=True)
        if self.proc is not None:
            try:
                os.set_blocking(self.proc.stdin.fileno(), True)  # let pacat take the last blocks
                self.proc.stdin.close()
                self.proc.wait(2)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
            self.proc = None
        self._unload()
        return []

    def _unload(self) -> None:
        for module in reversed(self.modules):
            try:
                pactl("unload-module", module)
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                log.warning("virtual microphone: could not unload module %s: %s", module, exc)
        self.modules.clear()

    def stats(self) -> dict[str, float]:
        return {"audio_s_played": seconds(self.samples_played, self.sample_rate_hz),
                "dropped_s": seconds(self.samples_dropped, self.sample_rate_hz),
                "write_failures": self.write_failures, "voice_switches": self.voice_switches}
