"""Stft: the microphone's audio as spectra — complex frames for the separator, log-mel
frames for the audio encoder — computed once, here, so both see the same frames.

Frame ``t`` starts at stream sample ``s0 + t · hop``, where ``s0`` is the ``first_sample`` of
the first chunk received (0 for a stream watched from its start). A gap in the samples is
filled with silence and counted, an overlap is dropped, so that mapping holds for the
whole run and downstream nodes can map frames back to samples and time.

Each message's ``capture_ns`` is the capture time of the newest sample its last frame
contains (chunk capture time + sample offset): the moment all of its data existed, so
now − capture_ns is the pipeline's own delay.

A restarted process keeps the numbering (``carried``: ``s0``): its first frame is the one of the
run's frame grid where the first chunk it gets falls (the samples before it on that frame, missed
while it was down, are silence), so frame ``t`` still starts at ``s0 + t · hop`` and the frames
it never made are a gap in ``first_frame`` that readers see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from engines.dsp import StftConfig, StreamingStft, log_mel
from pipeline.messages import AudioChunk, Spectrogram
from pipeline.node import BadInput, Input, Node, Output

#: the longest gap in the samples filled with silence; a larger jump of ``first_sample`` is refused
#: (a forged or corrupt counter must not make this node allocate hours of zeros)
MAX_GAP_S = 10.0


class Stft(Node):
    """Streaming STFT + log-mel of one audio stream (see engines/dsp.py for the convention)."""

    @dataclass
    class Params:
        sample_rate_hz: int = 16000
        n_fft: int = 512
        hop_length: int = 160       # 10 ms at 16 kHz
        win_length: int = 400       # 25 ms at 16 kHz
        window: Literal["hann", "hamming"] = "hann"
        n_mels: int = 80
        f_min_hz: float = 0.0
        f_max_hz: float = 0.0       # 0 = Nyquist

        def validate(self) -> None:
            self.config()  # raises ValueError naming the bad field

        def config(self) -> StftConfig:
            return StftConfig(self.sample_rate_hz, self.n_fft, self.hop_length, self.win_length, self.window,
                              self.n_mels, self.f_min_hz, self.f_max_hz)

    inputs = {"audio": Input(AudioChunk, policy="queue", size=64)}
    outputs = {
        "spectrum": Output(Spectrogram, doc="complex64 (T, n_fft/2+1) frames, for the separator"),
        "logmel": Output(Spectrogram, doc="float32 (T, n_mels) natural-log mel power, for the audio encoder"),
    }

    #: ``s0_plus_1``: the stream sample of frame 0's start, plus one (0: none yet), kept across a restart
    carries = ("s0_plus_1",)

    def open(self) -> None:
        self.cfg = self.params.config()
        self.engine = StreamingStft(self.cfg)
        self.filterbank = self.cfg.mel_filterbank
        self.first_sample: int | None = None  # stream sample index of the engine's sample 0
        self.frame_offset = 0  # the run's number of the engine's frame 0 (not 0 after a restart)

    def on_message(self, port: str, chunk: AudioChunk) -> None:
        if chunk.sample_rate_hz != self.cfg.sample_rate_hz:
            raise BadInput(f"audio at {chunk.sample_rate_hz} Hz, stft set to {self.cfg.sample_rate_hz} Hz")
        if chunk.samples.ndim == 2 and chunk.samples.shape[1] == 0:
            raise BadInput(f"audio with 0 channels, shape {chunk.samples.shape}")
        samples = chunk.samples.mean(axis=1) if chunk.samples.ndim == 2 else chunk.samples
        if self.first_sample is None:
            self._anchor(chunk.first_sample)
        expected = self.first_sample + self.engine.samples_in
        if chunk.first_sample - expected > MAX_GAP_S * self.cfg.sample_rate_hz:
            raise BadInput(f"audio jumps {chunk.first_sample - expected} samples ahead of the stream, "
                           f"more than the {MAX_GAP_S:g} s of silence this node fills")
        if chunk.first_sample > expected:  # lost audio: keep frame ↔ sample mapping exact
            self.count("gap_samples", chunk.first_sample - expected)
            samples = np.concatenate([np.zeros(chunk.first_sample - expected, samples.dtype), samples])
        elif chunk.first_sample < expected:
            self.count("overlap_samples", min(expected - chunk.first_sample, samples.size))
            samples = samples[expected - chunk.first_sample:]
        first_frame = self.frame_offset + self.engine.frames_out
        frames = self.engine.push(samples)
        if not len(frames):
            return
        # the newest sample of the last frame, located in this chunk's own clock
        last = self.first_sample + self.engine.frame_end_sample(self.engine.frames_out - 1)
        capture_ns = chunk.capture_ns + round((last - chunk.first_sample) * 1e9 / self.cfg.sample_rate_hz)
        geometry = dict(sample_rate_hz=self.cfg.sample_rate_hz, n_fft=self.cfg.n_fft,
                        hop_length=self.cfg.hop_length, win_length=self.cfg.win_length,
                        first_frame=first_frame, capture_ns=capture_ns)
        self.send("spectrum", Spectrogram(frames=frames.astype(np.complex64), kind="complex", **geometry))
        self.send("logmel", Spectrogram(frames=log_mel(frames, self.filterbank), kind="logmel", **geometry))

    def _anchor(self, first_sample: int) -> None:
        """Place the engine's sample 0 on the run's frame grid: at this chunk at the run's start, else (a
        restarted process) at the start of the grid frame this chunk falls in."""
        s0 = self.carried["s0_plus_1"] - 1
        if s0 < 0 or first_sample < s0:  # the run's start (or a stream that started over): a new grid
            self.carried["s0_plus_1"] = first_sample + 1
            self.first_sample, self.frame_offset = first_sample, 0
            return
        self.frame_offset = (first_sample - s0) // self.cfg.hop_length
        self.first_sample = s0 + self.frame_offset * self.cfg.hop_length  # ≤ first_sample: the rest is a gap
        self.log.info("restarted: frames go on at %d (stream sample %d)", self.frame_offset, self.first_sample)
