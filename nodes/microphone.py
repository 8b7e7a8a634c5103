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

A file that cannot be opened, has no audio (a silent video) or does not decode is found in
``open()``: a :class:`ConfigError`, one line, no restart, the graph stops with exit code 2.

A microphone process that crashed (or was killed) and is restarted goes on, not over: a file goes
on at ``resume_at_ns()`` (the graph's clock, or in lossless pace right after the last chunk sent),
found by a seek; a device keeps its stream's sample clock (``carried``), so ``first_sample`` never
goes back and the time it was down shows downstream as a gap.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from media.audio_device import AudioDeviceError, AudioInput
from media.av_io import MediaError, audio_chunks
from pipeline.messages import AudioChunk
from pipeline.node import Node, Output
from pipeline.retry import Reconnecting
from pipeline.supervisor import ConfigError

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
        give_up_after: int = 0  # devices: consecutive failed opens before the stream ends; 0 = never

        def validate(self) -> None:
            if not 8000 <= self.sample_rate_hz <= 192_000:
                raise ValueError(f"sample_rate_hz={self.sample_rate_hz}: must be in 8000..192000")
            if not 1 <= self.chunk_ms <= 1000 or self.sample_rate_hz * self.chunk_ms % 1000:
                raise ValueError(f"chunk_ms={self.chunk_ms}: must be 1..1000 ms and a whole number of samples "
                                 f"at {self.sample_rate_hz} Hz")
            if not (0 < self.retry_initial_s <= self.retry_max_s <= 3600 and self.chunk_ms / 1000 < self.buffer_s <= 60):
                raise ValueError("need 0 < retry_initial_s <= retry_max_s <= 3600 and chunk_ms < buffer_s <= 60 s")
            if self.give_up_after < 0:
                raise ValueError(f"give_up_after must be ≥ 0, got {self.give_up_after}")
            if is_file(self.source) and "://" not in self.source and not Path(self.source).is_file():
                raise ValueError(f"source {self.source!r}: no such file (a device is 'default', a name or an index)")

    outputs = {"audio": Output(AudioChunk, doc="mono float32; capture_ns = capture time of the first sample")}
    #: devices: the capture time of stream sample 0, so a restarted process keeps the stream's sample clock
    carries = ("anchor_ns",)

    @classmethod
    def preflight(cls, params: Params) -> None:
        """Before the graph starts (pipeline.supervisor.preflight): a file must open, have audio and decode."""
        if is_file(params.source) and "://" not in params.source:  # a stream may come up later
            try:
                chunk_samples = params.sample_rate_hz * params.chunk_ms // 1000
                audio_chunks(params.source, params.sample_rate_hz, chunk_samples).close()
            except MediaError as exc:
                raise ConfigError(str(exc)) from None
        elif not is_file(params.source) and params.source != "default":
            # a device named or numbered that is not there is a mistake, said before anything starts; the
            # default device (a sound server may still be starting) and a device that fails later are retried
            from media.audio_device import _portaudio, find_device

            try:
                pa = _portaudio()
                try:
                    find_device(pa, params.source)
                finally:
                    pa.terminate()
            except AudioDeviceError as exc:
                raise ConfigError(f"microphone {params.source!r}: {exc}") from None

    def open(self) -> None:
        p = self.params
        self.is_file = is_file(p.source)
        self.chunk_samples = p.sample_rate_hz * p.chunk_ms // 1000
        self.next_sample = 0  # first_sample of the next chunk
        self.anchor_ns: int | None = self.carried["anchor_ns"] or None  # devices: capture time of stream sample 0
        self.sample_offset: int | None = None  # devices: this connection's sample 0 in stream samples
        self.microphone = Reconnecting(self, "microphone", self._open_device, AudioInput.close, (AudioDeviceError,),
                                       p.retry_initial_s, p.retry_max_s, p.give_up_after)
        self.counters.update(overflows=0, overrun_samples=0, gap_samples=0)
        self.chunks = None  # files: the decoder, a generator
        self.refusal = ""  # why this node cannot run as configured (its summary, for the supervisor)
        if self.is_file:
            try:  # a bad file fails now, before the graph starts
                self.chunks = audio_chunks(p.source, p.sample_rate_hz, self.chunk_samples)
            except MediaError as exc:
                if "://" in p.source:
                    raise  # a stream that is not up (yet): a crash, restarted with backoff
                self.refusal = str(exc)
                raise ConfigError(self.refusal) from None
            self.counters["connected"] = 1
            self.paced_by_media = p.realtime  # lossless: the other sources keep pace with this file
        # a file paced by its timestamps, restarted: go on at resume_at_ns() (known once the graph started)
        self.resuming = self.is_file and p.realtime and self.restarted

    def step(self) -> bool:
        return self._file_step() if self.is_file else self._device_step()

    def _file_step(self) -> bool:
        p = self.params
        if self.resuming:
            self.resuming = False
            self._resume()
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
        if p.realtime and not self.pace(round((self.next_sample + len(samples)) * ns_per_sample)):
            return True  # stopping
        self.send("audio", AudioChunk(samples=samples, sample_rate_hz=p.sample_rate_hz,
                                      first_sample=self.next_sample, capture_ns=capture_ns))
        self.next_sample += len(samples)
        return True

    def _device_step(self) -> bool:
        chunk = self.microphone.read(lambda device: device.read(self.chunk_samples, timeout_s=1.0))
        if chunk is None:  # (re)connecting; the loop keeps heartbeating
            return not self.microphone.gave_up
        samples, device_sample, capture_ns = chunk
        rate_hz = self.params.sample_rate_hz
        if self.sample_offset is None:  # a new connection: place it on the stream's sample clock,
            # so the time it was away shows downstream as a gap and first_sample never goes back
            if not self.anchor_ns:
                self.anchor_ns = self.carried["anchor_ns"] = capture_ns - round(device_sample * 1e9 / rate_hz)
            at = round((capture_ns - self.anchor_ns) * rate_hz / 1e9)
            self.sample_offset = max(at, self.next_sample) - device_sample
        first_sample = device_sample + self.sample_offset
        self.next_sample = first_sample + len(samples)
        dev = self.microphone.device
        self.counters.update(overflows=dev.overflows, overrun_samples=dev.overruns, gap_samples=dev.gap_samples)
        self.observe("clock_drift_ms", dev.drift_ns / 1e6)
        self.send("audio", AudioChunk(samples=samples, sample_rate_hz=rate_hz, first_sample=first_sample,
                                      capture_ns=capture_ns))
        return True

    def summary(self) -> str:
        if getattr(self, "refusal", ""):
            return self.refusal
        lost = self.counters.get("gap_samples", 0) / self.params.sample_rate_hz
        return f"{self.next_sample / self.params.sample_rate_hz:.1f} s of audio read" + (f", {lost:.2f} s lost by the device" if lost else "")

    def close(self) -> None:
        self.microphone.close()
        if self.chunks is not None:
            self.chunks.close()

    def _resume(self) -> None:
        """A restarted process: read on from ``resume_at_ns()`` instead of the file's start; a looping
        file in the pass that sample falls in (one pass is the audio stream's duration). The chunk
        grid starts there, and ``first_sample`` (the graph's sample clock) goes on from it."""
        p = self.params
        start = self.resume_at_ns() * p.sample_rate_hz // 1_000_000_000
        pass_samples = _audio_samples(p.source, p.sample_rate_hz) if p.loop else 0
        in_file = start % pass_samples if pass_samples else start
        self.chunks.close()
        self.chunks = _audio_chunks_from(p.source, p.sample_rate_hz, self.chunk_samples, in_file)
        self.next_sample = start
        self.log.info("restarted: going on at %.2f s of the graph's clock (%.2f s into %s)",
                      start / p.sample_rate_hz, in_file / p.sample_rate_hz, p.source)

    def _open_device(self) -> AudioInput:
        """The sound card, in callback mode; a new connection gets its own place on the sample clock."""
        p = self.params
        device = AudioInput(p.source, p.sample_rate_hz, frames_per_buffer=self.chunk_samples, buffer_s=p.buffer_s)
        self.sample_offset = None
        self.log.info("microphone %s open at %d Hz", device.device_name, p.sample_rate_hz)
        return device


def _audio_samples(source: str, sample_rate_hz: int) -> int:
    """One pass of a file's audio, in samples at ``sample_rate_hz``: its stream's duration."""
    import av

    try:
        with av.open(source) as container:
            stream = container.streams.audio[0]
            seconds = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else \
                (container.duration or 0) / 1e6
    except (av.FFmpegError, OSError, IndexError) as exc:
        raise MediaError(f"{source}: cannot read its duration: {exc}") from None
    return round(seconds * sample_rate_hz)


def _audio_chunks_from(source: str, sample_rate_hz: int, chunk_samples: int, start_sample: int):  # -> Iterator
    """``media.av_io.audio_chunks`` from sample ``start_sample`` (at ``sample_rate_hz``, from the
    stream's start) on: a seek to the audio frame before it, the samples before it dropped. Going on
    late in a long file costs a frame of decoding, not the file so far. (It belongs beside
    audio_chunks in media/av_io.py.)"""
    import av

    try:
        container = av.open(source)
    except (av.FFmpegError, OSError) as exc:
        raise MediaError(f"{source}: cannot open as audio: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        stream = container.streams.audio[0]
        origin = stream.start_time or 0
        if start_sample > 0:
            container.seek(origin + int(start_sample / sample_rate_hz / stream.time_base), stream=stream,
                           backward=True)
        resampler = av.AudioResampler(format="fltp", rate=sample_rate_hz)  # planar; channels averaged below
        pending, at = np.zeros(0, np.float32), None  # at: the stream sample of pending[0]
        for frame in itertools.chain(container.decode(stream), [None]):  # None flushes the resampler
            if frame is not None and at is None:
                if frame.pts is None:
                    continue
                at = round(float((frame.pts - origin) * stream.time_base) * sample_rate_hz)
            for out in resampler.resample(frame):
                pending = np.concatenate([pending, out.to_ndarray().mean(axis=0, dtype=np.float32)])
            if at is None:
                continue
            if at < start_sample:
                drop = min(start_sample - at, len(pending))
                pending, at = pending[drop:], at + drop
            n_full = len(pending) // chunk_samples * chunk_samples
            for first in range(0, n_full, chunk_samples):
                yield pending[first:first + chunk_samples].copy()
            pending, at = pending[n_full:], at + n_full
        if len(pending):
            yield pending
    except av.FFmpegError as exc:
        raise MediaError(f"{source}: decoding audio failed: {getattr(exc, 'strerror', None) or exc}") from None
    finally:
        container.close()
