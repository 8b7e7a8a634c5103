"""The live separation engine: STFT frames + each face's lip features → each face's audio.

One model call per pushed block serves every face at once (faces are the batch). Per face we keep
what must survive between calls — the GRU state, the lip-convolution history and an overlap-add
ISTFT — keyed by the tracker's face ID. A face that appears gets fresh state; a face that is gone
is dropped with its state; nothing else changes, so 1..N faces need no special cases.

Latency: the network is causal (no look-ahead), so a sample leaves as soon as the STFT/ISTFT let
it: an input sample is final in the output after at most one window (400 samples = 25 ms), the
figure ``tests/test_separation.py`` measures with an impulse.

The step function is anything mapping the model's named inputs to its outputs: the ONNX engine
(`engines.loader.load("separator").run`) live, or :func:`torch_step` for training-side checks.
The same class, pushed a whole clip at once, is what `evaluate.py` runs, so the figures are the
live path's figures.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from engines.dsp import StftConfig, StreamingIstft
from engines.separation.two_voice_blend import AUDIO_ONLY_BLEND, TwoVoiceBlend

#: A stream's first samples are covered only by the rising edge of one window, where the overlap-add
#: normaliser Σw² is ~1e-5 and dividing a masked (no longer consistent) frame by it blows up into a
#: click. Below this normaliser the output is 0: it silences the first ~40 samples of a face's stream.
ISTFT_EPS = 1e-2

#: Faces on one screen compete for each time-frequency bin: face i's mask is scaled by its share of the faces'
#: summed mask magnitude there, (|m_i|² / Σ_j |m_j|²)^(c/2). Speech is sparse in the STFT, so a bin is almost
#: always one voice's; the model judges each face alone, and a face whose lips it reads poorly takes the other
#: face's voice (the 11 % of faces "swapped" on the validation pairs). Chosen on those pairs (identities id09
#: × id13, `python -m lab.real_faces.train_separator --evaluate ... --competition C`): c = 0 → 2.96 dB SI-SDRi,
#: 11 % swapped; 0.75 → 3.47, 6 %; 1 → 3.52, 3.75 %; 1.5 → 3.52, 3.75 %. One face alone is unchanged.
FACE_COMPETITION = 1.0

StepFn = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


def torch_step(model) -> StepFn:
    """A step function running a torch :class:`~engines.separation.separator_model.CausalSeparator`."""
    import torch

    def step(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            args = [torch.from_numpy(np.array(inputs[k], np.float32)) for k in ("mixture", "lips", "vis_state", "gru_state")]
            mask, vis, gru = model(*args)
        return {"mask": mask.numpy(), "vis_state_out": vis.numpy(), "gru_state_out": gru.numpy()}

    return step


@dataclass
class FaceState:
    vis: np.ndarray  # (D, K)
    gru: np.ndarray  # (L, H)
    istft: StreamingIstft


def inverse(frames: np.ndarray, cfg: StftConfig = StftConfig()) -> np.ndarray:
    """Offline ISTFT of masked frames with the same guard as the streaming path."""
    inv = StreamingIstft(cfg, eps=ISTFT_EPS)
    return np.concatenate([inv.push(frames), inv.flush()])


def to_real(frames: np.ndarray) -> np.ndarray:
    """(T, F) complex → (T, F, 2) float32 real/imag, the model's input layout."""
    return np.stack([frames.real, frames.imag], axis=-1).astype(np.float32)


def compete(masks: np.ndarray, exponent: float) -> np.ndarray:
    """(N, T, F) complex masks of the faces on one screen → each scaled by its share (`FACE_COMPETITION`)."""
    if len(masks) < 2 or exponent == 0:
        return masks
    power = masks.real ** 2 + masks.imag ** 2
    share = power / np.maximum(power.sum(axis=0, keepdims=True), 1e-12)
    return masks * share ** (exponent / 2)


class StreamingSeparator:
    """Push STFT frames of the mixture and each face's lip rows; get each face's new samples.

    ``lip_dim``/``vis_history``/``layers``/``hidden`` give the state shapes (from the checkpoint
    config, or the ONNX model's declared inputs). ``two_voices``: with a pair of faces on screen, the
    audio-only separator's voices handed to them (`engines.separation.two_voice_blend`); None: the AV masks alone.
    """

    def __init__(self, step: StepFn, lip_dim: int, vis_history: int, layers: int, hidden: int,
                 stft: StftConfig = StftConfig(), competition: float = FACE_COMPETITION,
                 two_voices: TwoVoiceBlend | None = None) -> None:
        if competition < 0:
            raise ValueError(f"face competition must be ≥ 0, got {competition}")
        self.step = step
        self.competition = competition
        self.two_voices = two_voices
        self.lip_dim, self.vis_history, self.layers, self.hidden = lip_dim, vis_history, layers, hidden
        self.stft = stft
        self.faces: dict[int, FaceState] = {}

    @staticmethod
    def from_model(model, stft: StftConfig = StftConfig(), competition: float = FACE_COMPETITION,
                   two_voices: TwoVoiceBlend | None = None) -> "StreamingSeparator":
        c = model.config
        return StreamingSeparator(torch_step(model), c.lip_dim, c.vis_history, c.layers, c.hidden, stft, competition,
                                  two_voices)

    @staticmethod
    def from_engine(engine, stft: StftConfig = StftConfig(), competition: float = FACE_COMPETITION,
                    two_voices: TwoVoiceBlend | None = None) -> "StreamingSeparator":
        """Around an AV engine from ``engines.loader.load``: state sizes from its declared inputs."""
        shapes = {t.name: t.shape for t in engine.inputs}
        _, lip_dim, vis_history = shapes["vis_state"]
        layers, _, hidden = shapes["gru_state"]
        return StreamingSeparator(engine.run, lip_dim, vis_history, layers, hidden, stft, competition, two_voices)

    @staticmethod
    def from_registry(model: str = "separator", audio_only_model: str = "separator_audio_only",
                      backend: str = "auto", threads: int = 1, competition: float = FACE_COMPETITION,
                      blend: float = AUDIO_ONLY_BLEND) -> "StreamingSeparator":
        """The live engine as the separator node runs it: the registry's AV model and, unless ``blend`` is 0, its
        audio-only model for two faces (`TwoVoiceBlend`)."""
        from engines.loader import load

        two_voices = None if blend == 0 else TwoVoiceBlend.from_engine(load(audio_only_model, backend, threads=threads),
                                                                      blend)
        return StreamingSeparator.from_engine(load(model, backend, threads=threads), competition=competition,
                                              two_voices=two_voices)

    def push(self, frames: np.ndarray, lips: Mapping[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """frames (T, F) complex; lips {face id: (T, D) or (D,) held over the block}.

        Returns (face ids (N,) int64, samples (N, n) float32): every face's output over the same span
        of samples (a face that just arrived is zero before its first frame).
        """
        ids = sorted(lips)
        for gone in set(self.faces) - set(ids):
            del self.faces[gone]
        t = frames.shape[0]
        if not ids:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        new = {f for f in ids if f not in self.faces}
        for face in ids:
            if face in new:
                self.faces[face] = FaceState(np.zeros((self.lip_dim, self.vis_history), np.float32),
                                             np.zeros((self.layers, self.hidden), np.float32), StreamingIstft(self.stft, eps=ISTFT_EPS))
        if t == 0:
            return np.array(ids, np.int64), np.zeros((len(ids), 0), np.float32)
        mixture = np.broadcast_to(to_real(frames), (len(ids), t, frames.shape[1], 2))
        rows = [np.broadcast_to(np.asarray(lips[f], np.float32), (t, self.lip_dim)) for f in ids]
        out = self.step({
            "mixture": np.ascontiguousarray(mixture),
            "lips": np.ascontiguousarray(np.stack(rows)),
            "vis_state": np.stack([self.faces[f].vis for f in ids]),
            "gru_state": np.ascontiguousarray(np.stack([self.faces[f].gru for f in ids], axis=1)),
        })
        mask = out["mask"][:, :, 0]  # (N, T, F, 2)
        masks = compete(mask[..., 0] + 1j * mask[..., 1], self.competition)
        if self.two_voices is not None:
            masks = self.two_voices(frames, masks, ids)
        masked = masks * frames[None]
        pieces = []
        for i, face in enumerate(ids):
            state = self.faces[face]
            state.vis = out["vis_state_out"][i]
            state.gru = out["gru_state_out"][:, i]
            pieces.append(state.istft.push(masked[i]))
        # Every ISTFT has now released up to the same stream sample; a new one also released its
        # first `left` (silent) samples, so cut everyone to the span the faces already running cover.
        old = [len(p) for f, p in zip(ids, pieces) if f not in new]
        n = old[0] if old else max(len(p) for p in pieces)
        samples = np.zeros((len(ids), n), np.float32)
        for i, p in enumerate(pieces):
            p = p[-n:] if n else p[:0]
            samples[i, n - len(p):] = p
        return np.array(ids, np.int64), samples

    def reset(self) -> None:
        """Forget every face's state: the next push starts afresh (after a gap in the stream)."""
        self.faces.clear()
        if self.two_voices is not None:
            self.two_voices.reset()

    def flush(self) -> tuple[np.ndarray, np.ndarray]:
        """Release each face's ISTFT tail at end of stream."""
        ids = sorted(self.faces)
        pieces = [self.faces[f].istft.flush() for f in ids]
        n = max((len(p) for p in pieces), default=0)
        samples = np.zeros((len(ids), n), np.float32)
        for i, p in enumerate(pieces):
            samples[i, n - len(p):] = p
        return np.array(ids, np.int64), samples
