"""Microphone: hop-sized chunks of 16 kHz mono audio, from a sound card or replayed from a file.

Devices go through PyAudio in callback mode (``media.audio_device.AudioInput``): the
callback only fills a ring buffer, and this node cuts it into ``chunk_ms`` chunks. A chunk's
``capture_ns`` is the capture time of its first sample: the ADC clock for devices, and
``epoch_ns`` plus the sample count for files. So the camera and the microphone reading the
same file line up sample-exactly, and the STFT node can tell the age of every frame.
``first_sample`` counts samples since the stream started; a jump in it is audio the device
lost.

The default chunk is 10 ms, the STFT hop. A chunk then completes exactly one hop, and no
node waits on a half-filled frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from media.av_io import MediaError, audio_chunks
from pipeline.messages import AudioChunk
from pipeline.node import Node, Output
from pipeline.retry import Backoff

MEDIA_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".mp4", ".mkv", ".mov", ".webm", ".avi"}


def is_file(source: str) -> bool:
    """A path or URL (PyAV); anything else ("default", "pulse", "USB Audio", "2") is a device."""
    return "://" in source or "/" in source or Path(source).suffix.lower() in MEDIA_SUFFIXES or Path(source).is_file()


class Microphone(Node):
    """Hop-sized 16 kHz mono chunks from a sound card (PyAudio) or a file (PyAV), stamped at capture."""

    @dataclass
    class Params:
        source: str = "default"  # "default", a device name (or part of it) or index, or a file path/URL
        sample_rate_hz: int = 16000
        chunk_ms: int = 10  # one STFT hop
        realtime: bool = True  # files: release each chunk when it would have been recorded
        loop: bool = False  # files: start over at the end; first_sample keeps counting
        buffer_s: float = 2.0  # devices: ring buffer; a reader stalled longer than this loses audio
        retry_initial_s: float = 0.5  # first wait after a device failure; doubles up to retry_max_s
        retry_max_s: float = 10.0

        def validate(self) -> None:
            if self.sample_rate_hz <= 0 or self.chunk_ms <= 0 or self.sample_rate_hz * self.chunk_ms % 1000:
                raise ValueError(f"chunk_ms={self.chunk_ms} is not a whole number of samples "
                                 f"at {self.sample_rate_hz} Hz")
            if not 0 < self.retry_initial_s <= self.retry_max_s or self.buffer_s <= self.chunk_ms / 1000:
                raise ValueError("need 0 < retry_initial_s <= retry_max_s and buffer_s > chunk_ms")
            if is_file(self.source) and "://" not in self.source and not Path(self.source).is_file():
                raise ValueError(f"source {self.source!r}: no such file (a device is 'default', a name or an index)")

    outputs = {"audio": Output(AudioChunk, doc="mono float32; capture_ns = capture time of the first sample")}

    def open(self) -> None:
        src = self.params.source
        self.is_file = is_file(src)
        self.chunk_samples = self.params.sample_rate_hz * self.params.chunk_ms // 1000
        self.chunks: Iterator[np.ndarray] | None = None  # files
        self.device: Any = None  # media.audio_device.AudioInput
        self.next_sample = 0  # first_sample of the next chunk
        self.anchor_ns: int | None = None  # devices: capture time of stream sample 0
        self.sample_offset: int | None = None  # devices: this connection's sample 0 in stream samples
        self.backoff = Backoff(self.params.retry_initial_s, self.params.retry_max_s)
        self.counters.update(connected=0, open_failures=0, disconnects=0, overflows=0, overrun_samples=0,
                             gap_samples=0)
        if self.is_file:
            self.chunks = audio_chunks(src, self.params.sample_rate_hz, self.chunk_samples)  # a bad file fails now

    def step(self) -> bool:
        return self._file_step() if self.is_file else self._device_step()

    def _file_step(self) -> bool:
        p = self.params
        try:
            samples = next(self.chunks, None)
        except MediaError as exc:
            self.log.error("%s; ending the stream", exc)
            self.count("errors")
            return False
        if samples is None:
            if not p.loop:
                return False
            self.chunks = audio_chunks(p.source, p.sample_rate_hz, self.chunk_samples)
            return True
        ns_per_sample = 1e9 / p.sample_rate_hz
        capture_ns = self.epoch_ns + round(self.next_sample * ns_per_sample)
        # a chunk exists only once its last sample has been "recorded"
        if p.realtime and not self.sleep_until(capture_ns + round(len(samples) * ns_per_sample)):
            return True  # stopping
        self.send("audio", AudioChunk(samples=samples, sample_rate_hz=p.sample_rate_hz,
                                      first_sample=self.next_sample, capture_ns=capture_ns))
        self.next_sample += len(samples)
        return True

    def _device_step(self) -> bool:
        from media.audio_device import AudioDeviceError

        if self.device is None and not self._connect():
            return True  # waiting to retry; the loop keeps heartbeating
        try:
            samples, device_sample, capture_ns = self.device.read(self.chunk_samples, timeout_s=1.0)
        except AudioDeviceError as exc:
            self.count("disconnects")
            self._schedule_retry(f"microphone lost: {exc}")
            return True
        if self.sample_offset is None:  # a new connection: place it on the stream's sample clock,
            # so the time it was away shows downstream as a gap and first_sample never goes back
            self.anchor_ns = self.anchor_ns or capture_ns - round(device_sample * 1e9 / self.params.sample_rate_hz)
            at = round((capture_ns - self.anchor_ns) * self.params.sample_rate_hz / 1e9)
            self.sample_offset = max(at, self.next_sample) - device_sample
        first_sample = device_sample + self.sample_offset
        self.next_sample = first_sample + len(samples)
        dev = self.device
        self.counters.update(overflows=dev.overflows, overrun_samples=dev.overruns, gap_samples=dev.gap_samples)
        self.observe("clock_drift_ms", dev.drift_ns / 1e6)
        self.send("audio", AudioChunk(samples=samples, sample_rate_hz=self.params.sample_rate_hz,
                                      first_sample=first_sample, capture_ns=capture_ns))
        self.backoff.succeeded()  # it works: forget old failures
        return True

    def close(self) -> None:
        if self.device is not None:
            self.device.close()
            self.device = None
        if self.chunks is not None:
            self.chunks.close()

    # -- device failures and retries ---------------------------------------------------------

    def _connect(self) -> bool:
        from media.audio_device import AudioDeviceError, AudioInput

        if not self.backoff.due():
            self.sleep_until(self.backoff.wait_slice_ns())
            return False
        p = self.params
        try:
            self.device = AudioInput(p.source, p.sample_rate_hz, frames_per_buffer=self.chunk_samples,
                                     buffer_s=p.buffer_s)
            self.sample_offset = None
        except AudioDeviceError as exc:
            self.count("open_failures")
            self._schedule_retry(str(exc))
            return False
        self.counters["connected"] = 1
        self.log.info("microphone %s open at %d Hz", self.device.device_name, p.sample_rate_hz)
        return True

    def _schedule_retry(self, reason: str) -> None:
        if self.device is not None:
            self.device.close()
            self.device = None
        self.counters["connected"] = 0
        self.log.error("%s; retrying in %.1f s", reason, self.backoff.failed())
