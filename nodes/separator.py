"""Separator: one isolated voice per face on screen, live ("Looking to Listen", made causal).

The microphone's complex STFT frames and each face's lip embedding (the faces node's lip encoder,
learned on real faces) go through the causal AV separator (engines/separation, trained on real
faces: `lab/real_faces`); every face gets its own complex ratio mask and its own ISTFT, and all
voices leave together as one SeparatedAudio aligned with the face track IDs.

Faces follow the latest FaceTracks: a face that appears starts a voice stream with fresh state, a
face that leaves ends its stream. A face's lip features are held between video frames (25 fps vs
100 STFT frames/s) — the same causal hold the model was trained with. If no FaceTracks arrived for
``face_timeout_ms`` (camera stalled), there are no faces and nothing is sent.

Output sample positions: frame ``t`` of the spectrum starts at stream sample ``t · hop`` (the stft
node counts from the first sample it saw); every face's output ends at the last sample its ISTFT
can release, so ``first_sample`` is that end minus the block length.

With two faces on screen (the pair followed while a third face comes and goes), each face's mask is mostly the audio-only
separator's voice that the AV model's own estimate says is that face's (`engines/separation/two_voice_blend.py`):
the network without a face separates two voices better than the one with faces, and cannot know whose each is;
the AV model can.

Every voice leaves through its own peak limiter (`engines/peak_limiter.py`): the model's make-up gain
can push a loud voice past full scale, and the samples turned down are counted (``limited_samples``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.dsp import StftConfig
from engines.peak_limiter import PeakLimiter
from engines.separation.streaming_separator import FACE_COMPETITION, StreamingSeparator
from engines.separation.two_voice_blend import AUDIO_ONLY_BLEND
from pipeline.messages import FaceTracks, SeparatedAudio, Spectrogram
from pipeline.node import BadInput, Input, Node, Output

#: the model runs once per face, on every spectrum: more faces than this in one FaceTracks is refused
MAX_FACES = 16
#: the most STFT frames one message may carry (12 s at a 10 ms hop, more than the stft node's 10 s gap
#: fill): the model's input and the voices message grow with it (16 faces × 12 s fit a SeparatedAudio)
MAX_FRAMES = 1200


class Separator(Node):
    """Complex STFT stream + FaceTracks → SeparatedAudio (one row per face)."""

    @dataclass
    class Params:
        model: str = "separator"      # registered model name (engines/models)
        backend: str = "auto"
        threads: int = 1
        face_timeout_ms: float = 500.0
        face_competition: float = FACE_COMPETITION  # how hard faces compete for each bin (0: each face alone)
        audio_only_model: str = "separator_audio_only"  # whose two voices two faces take
        audio_only_blend: float = AUDIO_ONLY_BLEND  # its share of two faces' masks (0: the AV masks alone)
        limit_ceiling: float = 0.97          # a voice's peaks are held to this (full scale 1.0)
        limit_release_db_per_s: float = 60.0  # how fast the limiter's gain comes back after a peak

        def validate(self) -> None:
            if self.face_competition < 0.0:
                raise ValueError(f"face_competition must be ≥ 0, got {self.face_competition}")
            if not 0.0 <= self.audio_only_blend <= 1.0:
                raise ValueError(f"audio_only_blend must be in [0, 1], got {self.audio_only_blend}")
            if not 0.0 < self.limit_ceiling <= 1.0:
                raise ValueError(f"limit_ceiling must be in (0, 1] (full scale 1.0), got {self.limit_ceiling}")
            if self.limit_release_db_per_s <= 0.0:
                raise ValueError(f"limit_release_db_per_s must be > 0, got {self.limit_release_db_per_s}")

    inputs = {
        "spectrum": Input(Spectrogram, policy="queue", size=256, doc="complex STFT frames (stft node)",
                          waits_for=("faces",)),
        "faces": Input(FaceTracks, policy="latest", doc="face track ids and lip features (faces node)"),
    }
    outputs = {"voices": Output(SeparatedAudio, doc="one isolated voice per face track")}

    def open(self) -> None:
        p = self.params
        self.engine = StreamingSeparator.from_registry(p.model, p.audio_only_model, p.backend, p.threads,
                                                       p.face_competition, p.audio_only_blend)
        self.faces: FaceTracks | None = None
        self.cfg: StftConfig | None = None
        self._released: int | None = None  # stream sample after the last one sent
        self._next_frame: int | None = None  # the STFT frame the next message should start at
        self._clock: tuple[int, int] = (0, 0)  # (stream sample, its capture_ns) of the newest spectrum
        self.limiters: dict[int, PeakLimiter] = {}  # per face track, for as long as its voice lasts

    def on_message(self, port: str, msg) -> None:
        if port == "faces":
            n, dims = msg.lip_features.shape
            if n > MAX_FACES or (n and dims != self.engine.lip_dim):
                raise BadInput(f"{n} faces with {dims} lip features; the model takes ≤ {MAX_FACES} faces × "
                               f"{self.engine.lip_dim}")
            self.faces = msg
            return
        if msg.kind != "complex":
            raise BadInput(f"separator needs complex STFT frames, got {msg.kind!r}")
        want = self.engine.stft
        geometry = (msg.sample_rate_hz, msg.n_fft, msg.hop_length, msg.win_length, msg.frames.shape[1])
        if geometry != (want.sample_rate_hz, want.n_fft, want.hop_length, want.win_length, want.n_freqs):
            raise BadInput(f"STFT (rate, n_fft, hop, win, bins) {geometry}, the model takes "
                           f"{(want.sample_rate_hz, want.n_fft, want.hop_length, want.win_length, want.n_freqs)}")
        if len(msg.frames) > MAX_FRAMES:
            raise BadInput(f"{len(msg.frames)} STFT frames in one message, limit {MAX_FRAMES}")
        self.cfg = StftConfig(msg.sample_rate_hz, msg.n_fft, msg.hop_length, msg.win_length)
        if self._next_frame is not None and msg.first_frame != self._next_frame:
            # frames lost upstream, or the microphone restarted: the carried GRU and overlap-add
            # state belong to other audio, so close every voice and start afresh (counted, visible)
            self.count("stft_gaps")
            self._release_tails()
            self.engine.reset()
        self._next_frame = msg.first_frame + len(msg.frames)
        # the spectrum's capture_ns is that of the newest sample of its last frame: keep it as
        # the clock that dates our output samples
        self._clock = self.cfg.frame_end_sample(msg.first_frame + len(msg.frames) - 1), msg.capture_ns
        ids, voices = self.engine.push(msg.frames.astype(np.complex128), self._current_lips(msg.capture_ns))
        self.observe("faces", float(len(ids)))
        if voices.size:
            end = (msg.first_frame + len(msg.frames)) * self.cfg.hop_length + self.cfg.left
            self._send(ids, voices, end - voices.shape[1])

    def on_end(self) -> None:
        self._release_tails()

    def _release_tails(self) -> None:
        if self.cfg is None:
            return
        ids, tail = self.engine.flush()  # the last window's overlap-add tail
        if tail.size and self._released is not None:
            self._send(ids, tail, self._released)

    def _current_lips(self, now_ns: int) -> dict[int, np.ndarray]:
        """The faces on screen now and their latest lip features (held)."""
        if self.faces is None or (now_ns - self.faces.capture_ns) > self.params.face_timeout_ms * 1e6:
            return {}
        return {int(t): row for t, row in zip(self.faces.track_ids, self.faces.lip_features)}

    def _send(self, ids: np.ndarray, voices: np.ndarray, first_sample: int) -> None:
        """``capture_ns`` of a voice block is that of its first sample (as for AudioChunk), dated
        from the spectrum's clock: the released samples lag the newest STFT sample by about a window."""
        clock_sample, clock_ns = self._clock
        capture_ns = clock_ns - round((clock_sample - first_sample) * 1e9 / self.cfg.sample_rate_hz)
        self._released = first_sample + voices.shape[1]
        voices = self._limit(ids, voices)
        self.send("voices", SeparatedAudio(samples=voices, track_ids=ids.astype(np.int64),
                                           sample_rate_hz=self.cfg.sample_rate_hz, first_sample=int(first_sample),
                                           capture_ns=capture_ns))

    def _limit(self, ids: np.ndarray, voices: np.ndarray) -> np.ndarray:
        """Each face's block through its own limiter (a face that left takes its limiter with it)."""
        self.limiters = {t: self.limiters.get(t) or PeakLimiter(self.cfg.sample_rate_hz, self.params.limit_ceiling,
                                                                self.params.limit_release_db_per_s)
                         for t in ids.tolist()}
        out = np.empty(voices.shape, np.float32)
        for row, track in enumerate(ids.tolist()):
            out[row], limited = self.limiters[track].process(voices[row])
            if limited:
                self.count("limited_samples", limited)
        return out
