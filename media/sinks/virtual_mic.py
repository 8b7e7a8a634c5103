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
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from typing import Any

import numpy as np

from media.sinks.sink import VoiceChoice, seconds
from media.sinks.speaker import SpeakerSink

log = logging.getLogger("earshot.sinks.virtual_mic")

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,47}$")


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
                 crossfade_ms: float = 15.0) -> None:
        if not NAME_RE.match(source):
            raise ValueError(f"virtual microphone name {source!r}: letters, digits, '_', '.', '-' (≤ 48)")
        super().__init__(None, sample_rate_hz, play_track, choice, crossfade_ms)
        self.source, self.sink = source, f"{source}_sink"
        self.description, self.latency_ms = description, latency_ms
        self.modules: list[str] = []  # the ones we loaded, to unload at close
        self.proc: subprocess.Popen | None = None

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
        log.info("virtual microphone %r (\"%s\") is live", self.source, self.description)
        return True

    def _stream_ready(self, timeout_s: float) -> bool:
        """Read pacat's verbose stderr until its stream is created (then drain it in the background)."""
        import select
        import threading
        import time

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
        try:
            self.proc.stdin.write(np.asarray(samples, "<f4").tobytes())
            self.proc.stdin.flush()
            self.samples_played += samples.size
        except (BrokenPipeError, OSError):
            self.count_failure()

    def count_failure(self) -> None:
        self.write_failures = getattr(self, "write_failures", 0) + 1
        if self.write_failures == 1:
            log.error("virtual microphone %r: the pacat writer is gone; its audio is dropped (counted)", self.source)

    def close(self) -> list:
        if self.proc is not None:
            try:
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
                "write_failures": getattr(self, "write_failures", 0), "voice_switches": self.voice_switches}
