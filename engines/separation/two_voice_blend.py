"""Two faces on screen: the audio-only separator's two voices, each handed to a face by the AV model.

Why: the AV network reads faces poorly and separates less than the same network without a face. On the
validation people (id09 × id13, 40 pairs at 0 dB) the AV model gives 3.52 dB SI-SDRi, while the audio-only CRN
separates the same mixtures to 5.51 dB — if someone tells it which of its two outputs is whose, which it cannot
know. The AV outputs can tell it: each is already mostly its own face's voice. So per STFT frame the evidence

    e(t) = Σ_f (|A₀| − |A₁|)(|B₀| − |B₁|)      A: the AV faces' outputs, B: the audio-only outputs

is positive when output 0 goes with face 0, negative when swapped; it is summed with a ``memory`` (frames, an
exponential forgetting: an audio-only separator may trade its outputs over a long stream when a voice pauses)
and its sign picks the assignment for that frame, no look-ahead. Each face's mask is then
``blend`` × its audio-only mask + (1 − ``blend``) × its own AV mask: the AV mask keeps what only the face knows
(an off-screen third talker the two-output network had to put somewhere).

Chosen on those validation pairs only (`python -m lab.real_faces.train_separator --evaluate av_crn:calibrated
--split validation --blend B`; 0 dB pairs / with an off-screen talker and noise): B = 0 (the AV masks alone)
3.52 / 2.98 dB; 0.5 → 5.00 / 3.72; **0.7 → 5.17 / 3.66**; 0.85 → 5.13 / 3.51; 1 (the audio-only voices alone)
4.96 / 3.29. The 10 s memory is long on purpose (a conversation, not a clip), not tuned. One face is never
touched (a lone voice exactly as before); a third face gets its AV mask alone (`_follow`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

AUDIO_ONLY_BLEND = 0.7
ASSIGN_MEMORY_FRAMES = 1000.0  # 10 s at the 10 ms hop


class TwoVoiceBlend:
    """Carries the audio-only network's state and the assignment evidence for one pair of faces (`_follow`)."""

    def __init__(self, step: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]],
                 state_shape: tuple[int, ...], blend: float = AUDIO_ONLY_BLEND,
                 memory_frames: float = ASSIGN_MEMORY_FRAMES) -> None:
        if not 0.0 <= blend <= 1.0:
            raise ValueError(f"audio-only blend must be in [0, 1], got {blend}")
        if memory_frames <= 0:
            raise ValueError(f"assignment memory must be > 0 frames, got {memory_frames}")
        self.step, self.state_shape, self.blend = step, tuple(state_shape), blend
        self.forget = float(np.exp(-1.0 / memory_frames))
        self.reset()

    @classmethod
    def from_engine(cls, engine, blend: float = AUDIO_ONLY_BLEND) -> "TwoVoiceBlend":
        """Around the audio-only engine (``separator_audio_only``): one stream, its state size declared."""
        shape = dict((t.name, t.shape) for t in engine.inputs)["gru_state"]
        return cls(engine.run, (shape[0], 1, shape[2]), blend)

    @classmethod
    def from_model(cls, model, blend: float = AUDIO_ONLY_BLEND,
                   memory_frames: float = ASSIGN_MEMORY_FRAMES) -> "TwoVoiceBlend":
        """Around a torch audio-only separator (training-side checks and the lab's evaluations, which may subclass
        it to watch its choices): the same step the ONNX export wraps (`shipped_separator.AudioOnlyStep`)."""
        import torch

        from engines.separation.shipped_separator import AudioOnlyStep

        audio_only = AudioOnlyStep(model)

        def step(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            with torch.inference_mode():
                mask, state = audio_only(*(torch.from_numpy(np.asarray(inputs[k], np.float32))
                                           for k in ("mixture", "gru_state")))
            return {"mask": mask.numpy(), "gru_state_out": state.numpy()}

        return cls(step, tuple(model.initial_state(1)[1].shape), blend, memory_frames)

    def reset(self) -> None:
        """Forget the pair, the network state and the evidence (the next two faces start afresh)."""
        self.pair: tuple[int, ...] | None = None
        self.state = np.zeros(self.state_shape, np.float32)
        self.evidence = 0.0

    def _follow(self, ids: list[int]) -> tuple[int, int] | None:
        """The pair to blend among the faces on screen now, carrying what can be carried. Real footage has other
        faces come and go (a person in the background: in the lab's end-to-end validation every swapped output was
        beside one) and a tracker now and then gives a face a new id, so while both faces of the pair are on
        screen the pair goes on (a third face gets its AV mask alone); when one of them is replaced, the one that
        stayed keeps its voice (the network's state goes on, the evidence keeps its strength) and the newcomer
        takes the other. Any other change starts afresh; fewer than two faces forget the pair."""
        if self.pair is not None and set(self.pair) <= set(ids):
            return self.pair
        if len(ids) != 2:
            if len(ids) < 2:
                self.reset()
            return None
        new = (ids[0], ids[1])
        stayed = set(new) & set(self.pair or ())
        if not stayed:
            self.reset()
        else:
            face = stayed.pop()
            if new.index(face) != self.pair.index(face):
                self.evidence = -self.evidence  # the face that stayed moved to the other row: keep its voice
        self.pair = new
        return new

    def __call__(self, frames: np.ndarray, masks: np.ndarray, ids: list[int]) -> np.ndarray:
        """frames (T, F) complex, masks (N, T, F) complex of faces ``ids`` (sorted) → the masks to apply."""
        if self.blend == 0.0:
            return masks
        pair = self._follow(list(ids))
        if pair is None:
            return masks
        rows = [list(ids).index(f) for f in pair]
        real = np.stack([frames.real, frames.imag], axis=-1).astype(np.float32)[None]
        out = self.step({"mixture": real, "gru_state": self.state})
        self.state = out["gru_state_out"]
        m = out["mask"][0]  # (T, 2, F, 2)
        audio_only = (m[..., 0] + 1j * m[..., 1]).transpose(1, 0, 2)  # (2, T, F)
        level = np.abs(frames)
        a, b = np.abs(masks[rows]) * level, np.abs(audio_only) * level
        per_frame = ((a[0] - a[1]) * (b[0] - b[1])).sum(axis=-1)
        swapped = np.empty(len(per_frame), bool)
        for t, e in enumerate(per_frame):
            self.evidence = self.forget * self.evidence + float(e)
            swapped[t] = self.evidence < 0
        assigned = np.where(swapped[None, :, None], audio_only[::-1], audio_only)
        out_masks = masks.copy()
        out_masks[rows] = self.blend * assigned + (1.0 - self.blend) * masks[rows]
        return out_masks
