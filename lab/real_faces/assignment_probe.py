"""Is each audio-only voice handed to the right face, and when not? The two-voice blend's choice, frame by frame.

    python -m lab.real_faces.assignment_probe [--split validation] [--memory-s 10]
    python -m lab.real_faces.assignment_probe --prize       what a right assignment would be worth, in dB

Why: on the validation people the blend's 4–6 s clips score ~0.7 dB under the same audio-only network with an
oracle assignment (blend 1: 5.27 against 6.00 dB with session 14's `g_ft_lo` as guide), while its long streams
reach the oracle. This says where the difference comes from. For each 0 dB pair (the report's pairs, shipped AV
model and guide), per STFT frame, the blend's choice (the audio-only voices handed over straight or crossed)
against the truth from the clean voices S: crossed when Σ_f (|S₀| − |S₁|)(|B₀| − |B₁|) < 0, with B the audio-only
voices — the engine's own evidence with the clean voices in place of the AV outputs. Frames weigh by that sum's
size (a frame where the two voices are alike cannot be handed over wrongly). Also: how much of that weight goes
against the clip's overall best assignment, i.e. how often the audio-only network trades its outputs inside a clip.

``--prize``: the audio-only voices alone (blend 1), handed over by the engine's evidence, by the clean voices'
evidence with the engine's 10 s memory and shorter ones, and by the clean voices' evidence frame by frame (the
best any assignment of these two outputs can do): SI-SDRi of the 0 dB pairs, each face against its own voice, as
the report scores them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from engines.dsp import stft
from engines.separation.crn_model import load_checkpoint
from engines.separation.shipped_separator import AUDIO_ONLY_WEIGHTS, AV_WEIGHTS
from engines.separation.two_voice_blend import AUDIO_ONLY_BLEND, ASSIGN_MEMORY_FRAMES, TwoVoiceBlend
from lab.real_faces.real_mixtures import pair_mixture
from lab.real_faces.train_separator import SYNC_WEIGHTS, report_pairs, separate, si_sdr

#: time since the pair formed, in 10 ms STFT frames: the edges of the table's rows
TIME_EDGES = (0, 25, 50, 100, 200, 300, None)
#: ``--prize``: memories of the clean voices' evidence, the engine's first (how long a trade of the audio-only
#: voices lasts decides which of them would collect it)
PRIZE_MEMORIES_S = (10.0, 1.0, 0.1)


class RecordingBlend(TwoVoiceBlend):
    """The engine's blend, unchanged, that keeps per frame whether it handed the audio-only voices over crossed
    and their magnitude difference |B₀| − |B₁|, read back from what it returned (not recomputed beside it)."""

    def __init__(self, step, state_shape, blend: float = AUDIO_ONLY_BLEND,
                 memory_frames: float = ASSIGN_MEMORY_FRAMES) -> None:
        super().__init__(self._watch, state_shape, blend, memory_frames)
        self._inner, self._last = step, None
        self.crossed: list[np.ndarray] = []
        self.voice_diff: list[np.ndarray] = []

    def _watch(self, inputs):
        self._last = self._inner(inputs)
        return self._last

    def __call__(self, frames: np.ndarray, masks: np.ndarray, ids: list[int]) -> np.ndarray:
        self._last = None
        out = super().__call__(frames, masks, ids)
        if self._last is None or self.blend == 0:  # no pair blended in this block
            return out
        row = list(ids).index(self.pair[0])
        m = self._last["mask"][0]
        voices = (m[..., 0] + 1j * m[..., 1]).transpose(1, 0, 2)  # (2, T, F)
        given = (out[row] - (1.0 - self.blend) * masks[row]) / self.blend  # the first face's audio-only mask
        self.crossed.append(np.abs(given - voices[1]).sum(-1) < np.abs(given - voices[0]).sum(-1))
        self.voice_diff.append(np.abs(voices[0] * frames) - np.abs(voices[1] * frames))
        return out


def ideal_masks(refs: list[np.ndarray], mixture: np.ndarray) -> np.ndarray:
    """(2, T, F) each clean voice's ideal ratio mask |S_k| / |X|."""
    x = np.abs(stft(mixture))
    return np.stack([np.abs(stft(r)) / (x + 1e-8) for r in refs]).astype(complex)


class CleanEvidenceBlend(TwoVoiceBlend):
    """The engine's blend judging by the clean voices: each face's AV mask is replaced by its voice's ideal ratio
    mask |S_k| / |X| before the blend weighs the evidence, so the evidence is the truth's (the AV masks' share of
    the output must be 0: ``blend`` 1)."""

    def __init__(self, step, state_shape, blend: float = 1.0, memory_frames: float = ASSIGN_MEMORY_FRAMES) -> None:
        if blend != 1.0:
            raise ValueError("the clean voices' masks may only judge, not be heard: blend must be 1")
        super().__init__(step, state_shape, blend, memory_frames)
        self.ideal, self.at = np.zeros((2, 0, 0), complex), 0

    def hear(self, ideal: np.ndarray) -> None:
        """The next clip's `ideal_masks`, in the order of the faces (ids sorted)."""
        self.ideal, self.at = ideal, 0

    def __call__(self, frames: np.ndarray, masks: np.ndarray, ids: list[int]) -> np.ndarray:
        n = len(frames)
        ideal = np.zeros((2, n, frames.shape[1]), complex)
        part = self.ideal[:, self.at:self.at + n]
        ideal[:, :part.shape[1]] = part
        self.at += n
        return super().__call__(frames, ideal, ids)


def prize(model, guide, pairs) -> dict[str, float]:
    """Mean SI-SDRi per face of the audio-only voices (blend 1), handed over by the engine's evidence, by the clean
    voices' at each of PRIZE_MEMORIES_S, and by the clean voices frame by frame."""
    ways = {"the engine's evidence (AV outputs)": lambda: TwoVoiceBlend.from_model(guide, 1.0)}
    for memory_s in PRIZE_MEMORIES_S:
        ways[f"the clean voices' evidence, {memory_s:g} s memory"] = (
            lambda m=memory_s: CleanEvidenceBlend.from_model(guide, 1.0, m * 100))
    ways["the clean voices' evidence, frame by frame"] = lambda: CleanEvidenceBlend.from_model(guide, 1.0, 1e-3)
    scores: dict[str, list[float]] = {w: [] for w in ways}
    for pair in pairs:
        mix, refs = pair_mixture(pair)
        ideal = ideal_masks(refs, mix)  # once per clip, for every clean judge
        for way, make in ways.items():
            blend = make()
            if isinstance(blend, CleanEvidenceBlend):
                blend.hear(ideal)
            out = separate(model, mix, [pair[0].emb, pair[1].emb], two_voices=blend)
            scores[way] += [si_sdr(out[k], refs[k]) - si_sdr(mix, refs[k]) for k in range(2)]
    return {way: float(np.mean(v)) for way, v in scores.items()}


def truth_evidence(refs: list[np.ndarray], voice_diff: np.ndarray) -> np.ndarray:
    """Per frame Σ_f (|S₀| − |S₁|)(|B₀| − |B₁|): > 0 when the audio-only voices go straight to the faces."""
    s0, s1 = (np.abs(stft(r)) for r in refs)
    n = min(len(s0), len(voice_diff))
    return ((s0[:n] - s1[:n]) * voice_diff[:n]).sum(-1)


def tally(crossed: np.ndarray, truth: np.ndarray, edges=TIME_EDGES) -> tuple[np.ndarray, np.ndarray, float]:
    """(weight handed over right, weight in all) per time row, and the weight against the clip's best assignment."""
    n = len(truth)
    crossed, weight = crossed[:n], np.abs(truth)
    right = weight * (crossed == (truth < 0))
    rows = [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]
    against_clip = float((weight * ((truth < 0) != (truth.sum() < 0))).sum())
    return (np.array([right[r].sum() for r in rows]), np.array([weight[r].sum() for r in rows]), against_clip)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", choices=("validation", "test"), default="validation")
    p.add_argument("--pairs", type=int, default=40)
    p.add_argument("--memory-s", type=float, default=ASSIGN_MEMORY_FRAMES / 100,
                   help="the blend's assignment memory (the engine's: 10 s)")
    p.add_argument("--prize", action="store_true", help="SI-SDRi of the audio-only voices under each hand-over")
    p.add_argument("--guide", type=Path, default=AUDIO_ONLY_WEIGHTS,
                   help="the audio-only separator whose voices are handed over (default the shipped one)")
    args = p.parse_args(argv)
    model = load_checkpoint(AV_WEIGHTS).model().eval()
    guide = load_checkpoint(args.guide).model().eval()
    if args.prize:
        print(f"{args.split}, {args.pairs} pairs at 0 dB, guide {args.guide}, the audio-only voices alone (blend 1), "
              "SI-SDRi per face:")
        for way, value in prize(model, guide, report_pairs(args.split, SYNC_WEIGHTS, args.pairs)).items():
            print(f"  handed over by {way}: {value:.2f} dB")
        return 0
    right = total = 0.0
    against = 0.0
    for pair in report_pairs(args.split, SYNC_WEIGHTS, args.pairs):
        mix, refs = pair_mixture(pair)
        blend = RecordingBlend.from_model(guide, AUDIO_ONLY_BLEND, args.memory_s * 100)
        separate(model, mix, [pair[0].emb, pair[1].emb], two_voices=blend)
        truth = truth_evidence(refs, np.concatenate(blend.voice_diff))
        r, t, a = tally(np.concatenate(blend.crossed), truth)
        right, total, against = right + r, total + t, against + a
    print(f"{args.split}, {args.pairs} pairs at 0 dB, guide {args.guide}, memory {args.memory_s:g} s: "
          f"the blend's choice per frame, weighted by how much it matters")
    print("| since the pair formed | handed over right | share of the weight |")
    print("|---|---|---|")
    for (a, b), r, t in zip(zip(TIME_EDGES[:-1], TIME_EDGES[1:]), right, total):
        span = f"{a / 100:.2f}–{b / 100:.2f} s" if b is not None else f"≥ {a / 100:.2f} s"
        print(f"| {span} | {r / t:.1%} | {t / total.sum():.1%} |")
    print(f"| all | {right.sum() / total.sum():.1%} | 100 % |")
    print(f"The audio-only voices trade places inside a clip on {against / total.sum():.1%} of the weight "
          "(per-frame truth against the clip's best assignment).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
